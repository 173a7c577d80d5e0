"""Finding a NaN or inf in what is about to be saved: models, optimizer states, any nested state.

Nothing non-finite may reach a checkpoint or an exported model; the savers call :func:`first_nonfinite`
first and refuse with its description. Cheap: one ``isfinite(...).all()`` per floating tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch


def first_nonfinite(parts: Mapping[str, Any]) -> str | None:
    """A description of the first tensor or float under ``parts`` (name -> module, optimizer or other
    stateful object, tensor, or nested dicts/lists of them) that holds a NaN or inf; None when all are finite."""
    for name, value in _numbers(parts):
        if isinstance(value, float):
            if not math.isfinite(value):
                return f"{name} is {value}"
            continue
        local = value.to_local() if hasattr(value, "to_local") else value  # a DTensor: this rank's shard
        if not bool(torch.isfinite(local).all()):
            bad = int((~torch.isfinite(local)).sum())
            return f"{name} holds {bad} non-finite value(s) (NaN/inf) of {local.numel()}"
    return None


def _numbers(value: Any, name: str = "") -> Iterator[tuple[str, torch.Tensor | float]]:
    """(dotted name, floating tensor or float) of everything under ``value``."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            yield name, value
    elif isinstance(value, float):
        yield name, value
    elif callable(getattr(value, "state_dict", None)):  # a module, an optimizer, a scheduler...
        yield from _numbers(value.state_dict(), name)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _numbers(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{name}[{i}]")

