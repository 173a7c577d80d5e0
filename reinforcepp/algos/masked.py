"""Masked statistics over the valid tokens of a batch.

Shapes: B sequences, T response positions. ``mask`` is 1 on tokens that count (response tokens) and
0 on padding; it may be bool or float. Every statistic here is token-weighted: each valid token is one
observation, so a long response weighs more than a short one (this is what OpenRLHF and verl do for
REINFORCE++'s global normalization).
"""

from __future__ import annotations

import torch

from .dtypes import compute_dtype

# Variance floor of the global whitening: std >= 1e-4 (OpenRLHF's `clamp(var, min=1e-8)`).
WHITEN_VAR_FLOOR = 1e-8


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum_t mask_t * x_t over ``dim`` (all elements when None). x, mask: [B, T]."""
    masked = torch.where(mask.bool(), x, 0.0)  # NaN/inf on padding never leaks
    return masked.sum() if dim is None else masked.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum(mask * x) / sum(mask) over ``dim``; 0 where the mask is empty. x, mask: [B, T]."""
    count = mask.to(x.dtype).sum() if dim is None else mask.to(x.dtype).sum(dim=dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population variance over valid tokens: sum(mask * (x - mu)^2) / sum(mask). x, mask: [B, T] -> []."""
    mu = masked_mean(x, mask)
    return masked_mean((x - mu) ** 2, mask)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True) -> torch.Tensor:
    """Global z-score over all valid tokens (REINFORCE++ batch normalization, paper eq. 10).

        A_norm = (A - mu) / sqrt(max(var, 1e-8)),   mu, var over {(b, t) : mask[b, t] = 1}

    with the population variance (no Bessel correction) and the statistics taken in float32.
    Padding positions are 0 in the output. ``shift_mean=False`` only divides by the std.

    Shapes: x [B, T], mask [B, T] -> [B, T], float32 (float64 for float64 input).
    """
    x32 = x.to(compute_dtype(x))
    mu = masked_mean(x32, mask)
    var = masked_var(x32, mask)
    centred = x32 - mu if shift_mean else x32
    out = centred * torch.rsqrt(var.clamp(min=WHITEN_VAR_FLOOR))
    return torch.where(mask.bool(), out, 0.0)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last valid position (the last 1, so any padding side and masks with holes work):
    where the sequence reward sits (advantages) and where a reward model reads its score.

    Shapes: mask [B, L] -> [B] int64. A row without valid tokens has no last token: an error naming the rows.
    """
    valid = mask.bool()
    if not bool(valid.any(dim=1).all()):
        empty = (~valid.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"attention_mask: rows {empty} have no tokens, so they have no last token to score")
    return valid.shape[1] - 1 - valid.flip(-1).to(torch.int8).argmax(dim=1)
