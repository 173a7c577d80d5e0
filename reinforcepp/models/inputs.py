"""What a causal LM is fed, built one way for the sampler, the trainer, the critic and SFT: padded ids and
attention masks, position ids, and which models are Llama-family (the ones the fast paths compute themselves).

Torch only. The last valid token of a mask is :func:`reinforcepp.algos.masked.last_token_index` (the
advantages need it, and ``algos`` imports nothing else of the package).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

# config.model_type of the decoders whose causal-LM logits are exactly lm_head(h) (no logit scaling or
# soft-capping) and whose layers the sampler's fast path reimplements
LLAMA_FAMILY = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def is_llama_family(model: Any) -> bool:
    """``model``'s config.model_type is one of :data:`LLAMA_FAMILY`. Pass the transformers model itself: a
    PEFT wrapper forwards its inner model's config, so unwrap it first and check the modules you then use."""
    return getattr(getattr(model, "config", None), "model_type", None) in LLAMA_FAMILY


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts for generation: (ids, mask), both int64 [P, L], each row padded on the left to the longest, so
    every prompt ends where its response starts."""
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in seqs], dtype=torch.long)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    mask = (torch.arange(width).unsqueeze(0) >= (width - lengths).unsqueeze(1)).long()
    return ids, mask


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole sequences (SFT, reward-model pairs): (ids, mask), both int64 [B, L], each row padded on the right
    to the longest."""
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Position ids [B, L] from an attention mask [B, L] of any padding side: the count of real tokens before
    each one (0 at a row's first token), so padding never shifts a position; 1 on padding (as HF ``generate``;
    no real token attends to it)."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
