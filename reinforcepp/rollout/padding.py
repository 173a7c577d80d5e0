"""Left padding of prompts and their position ids, shared by the sampler's backends."""

from __future__ import annotations

import torch


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask, both int64 [P, Lp]."""
    width = max(len(p) for p in prompts)
    rows = [[pad_id] * (width - len(p)) + list(p) for p in prompts]
    ids = torch.tensor(rows, dtype=torch.long)
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    mask = (torch.arange(width).unsqueeze(0) >= (width - lengths).unsqueeze(1)).long()
    return ids, mask


def prefill_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids from a left-padded mask: cumsum - 1 on tokens, 1 on padding (as HF ``generate``)."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
