"""Log-probabilities of chosen tokens from logits."""

from __future__ import annotations

import torch

from .dtypes import compute_dtype


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(z / tau)[o_t] = z[o_t] / tau - logsumexp(z / tau), in float32 (float64 for float64 logits).

    ``temperature`` must be the sampler's: log-probs at another temperature make the PPO ratio wrong
    from the first token (TRL PR #4159). The input logits are never modified in place.

    Shapes: logits [..., V], tokens [...] (int64) -> [...] float32 or float64 (e.g. [B, T, V] in training,
    [B, V] in the sampler).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = logits.to(compute_dtype(logits))
    z = z / temperature if temperature != 1.0 else z
    chosen = z.gather(dim=-1, index=tokens.unsqueeze(-1)).squeeze(-1)  # [B, T]
    return chosen - torch.logsumexp(z, dim=-1)
