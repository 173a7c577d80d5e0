"""Forward passes over experience: response log-probs (and entropy) from the policy, values from the critic."""

from __future__ import annotations

import contextlib

import torch

from reinforcepp.algos import entropy_from_logits, token_logprobs

from .experience import Experience


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (fp32 master weights); plain fp32 on CPU, where bf16 matmuls are slow."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def policy_logprobs(
    model: torch.nn.Module, exp: Experience, temperature: float, *, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(o_t | prompt, o_<t) / temperature-scaled, for every response position.

    The LM head runs only on the T + 1 last positions (``logits_to_keep``), not the prompt.
    Entropy is that of the sampling distribution softmax(z / temperature).

    Shapes: -> (logp [B, T] float32, entropy [B, T] float32 or None), on the model's device.
    """
    device = next(model.parameters()).device
    T = exp.response_ids.shape[1]
    with autocast_for(device):
        out = model(**exp.model_inputs(device), use_cache=False, logits_to_keep=T + 1)
    logits = out.logits[:, :-1].float()  # [B, T, V]: position Lp - 1 + t predicts token t
    if temperature != 1.0:
        logits = logits / temperature
    logp = token_logprobs(logits, exp.response_ids.to(device))
    entropy = entropy_from_logits(logits) if with_entropy else None
    return logp, entropy


def critic_values(critic: torch.nn.Module, exp: Experience) -> torch.Tensor:
    """V_t: the critic's value of the state before response token t. Shapes: -> [B, T] float32."""
    device = next(critic.parameters()).device
    T = exp.response_ids.shape[1]
    inputs = exp.model_inputs(device)
    with autocast_for(device):
        values = critic(**inputs)  # [B, Lp + T]
    return values[:, -T - 1 : -1].float()
