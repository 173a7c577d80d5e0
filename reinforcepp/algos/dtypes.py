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


FLOAT32_MAX = torch.finfo(torch.float32).max


def beyond_float32(values: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the finite values that a float32 cast would turn into +-inf."""
    values = values.double()
    return torch.isfinite(values) & (values.abs() > FLOAT32_MAX)
