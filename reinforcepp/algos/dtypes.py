"""The floating-point type the algorithms compute in."""

from __future__ import annotations

import torch


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32, or float64 when an input is float64: half precision is upcast, float64 never downcast
    (a float64 model keeps float64 log-probs and losses, as the exactness tests need)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype
