"""Log-probabilities of chosen tokens from logits."""

from __future__ import annotations

import torch


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(z / tau)[o_t] = z[o_t] / tau - logsumexp(z / tau), in float32.

    ``temperature`` must be the sampler's: log-probs at another temperature make the PPO ratio wrong
    from the first token (TRL PR #4159). The input logits are never modified in place.

    Shapes: logits [..., V], tokens [...] (int64) -> [...] float32 (e.g. [B, T, V] in training, [B, V] in
    the sampler).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = logits.float() / temperature if temperature != 1.0 else logits.float()
    chosen = z.gather(dim=-1, index=tokens.unsqueeze(-1)).squeeze(-1)  # [B, T]
    return chosen - torch.logsumexp(z, dim=-1)
