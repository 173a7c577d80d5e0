"""Which device a run uses."""

from __future__ import annotations

import torch

from reinforcepp.config import ConfigError


def resolve_device(name: str) -> torch.device:
    """``device`` of the config: "auto" is CUDA when torch sees one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but torch sees no CUDA device")
    return torch.device(name)
