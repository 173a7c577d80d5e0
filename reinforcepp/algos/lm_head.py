"""Log-probs (and entropy) of chosen tokens straight from hidden states and the LM head, in row chunks.

The plain path builds logits z = h W^T for every response position ([N, V] in float32, 200 MB for 1,000
tokens at a 49k vocabulary), keeps them for the backward, and runs log-softmax, its backward and the
entropy over the whole tensor. Here each chunk of rows makes its logits, reduces them to log pi and H,
and drops them; the backward makes them again chunk by chunk (one more LM-head matmul), so no [N, V]
tensor ever exists. The formulas are the package's own
(:func:`~reinforcepp.algos.logprobs.token_logprobs`, :func:`~reinforcepp.algos.losses.entropy_from_logits`):
only where the logits live changes, so the results equal the plain path's to float rounding (tested).
"""

from __future__ import annotations

import torch

from .dtypes import compute_dtype
from .logprobs import token_logprobs
from .losses import entropy_from_logits

CHUNK_ELEMENTS = 1 << 24  # logits per chunk (64 MiB in float32); smaller chunks cost matmul speed on CPU


def head_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    *,
    with_entropy: bool = False,
    chunk_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(h W^T / tau)[o] and H(softmax(h W^T / tau)) per row, without materialising [N, V] logits.

        z_n        = h_n W^T / tau                              (the LM head, then the sampler's temperature)
        log pi_n   = z_n[o_n] - logsumexp(z_n)
        H_n        = logsumexp(z_n) - sum_v softmax(z_n)_v z_n,v

    Differentiable in ``hidden`` and ``weight``; the backward recomputes each chunk's logits.

    Shapes: hidden [N, H], weight [V, H], tokens [N] (int64) -> (log pi [N], H [N] or None), float32 (float64
    for float64 inputs).
    ``chunk_rows`` defaults to about ``CHUNK_ELEMENTS`` logits per chunk.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden [N, H] and weight [V, H] expected, got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    if tokens.shape != hidden.shape[:1]:
        raise ValueError(f"tokens must be [N] = [{hidden.shape[0]}], got {tuple(tokens.shape)}")
    rows = chunk_rows or max(1, CHUNK_ELEMENTS // weight.shape[0])
    return _HeadLogprobs.apply(hidden, weight, tokens, float(temperature), bool(with_entropy), int(rows))


def _sampling_logits(head_out: torch.Tensor, temperature: float) -> torch.Tensor:
    """The LM head's output (h W^T, in the inputs' dtype as nn.Linear gives it) -> float32 (float64 stays),
    divided by the temperature."""
    z = head_out.to(compute_dtype(head_out))
    return z / temperature if temperature != 1.0 else z


class _HeadLogprobs(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, hidden, weight, tokens, temperature, with_entropy, rows):
        n = hidden.shape[0]
        dtype = compute_dtype(hidden, weight)
        logp = torch.empty(n, dtype=dtype, device=hidden.device)
        entropy = torch.empty(n, dtype=dtype, device=hidden.device) if with_entropy else None
        for s in range(0, n, rows):
            z = _sampling_logits(torch.mm(hidden[s : s + rows], weight.t()), temperature)
            logp[s : s + rows] = token_logprobs(z, tokens[s : s + rows])
            if with_entropy:
                entropy[s : s + rows] = entropy_from_logits(z)
        ctx.save_for_backward(hidden, weight, tokens)
        ctx.temperature, ctx.rows = temperature, rows
        ctx.set_materialize_grads(False)  # an entropy that is only logged sends no gradient
        return logp, entropy

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, tokens = ctx.saved_tensors
        if grad_logp is None and grad_entropy is None:
            return None, None, None, None, None, None  # None is autograd's zero gradient
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        for s in range(0, hidden.shape[0], ctx.rows):
            rows = slice(s, s + ctx.rows)
            with torch.enable_grad():
                logits = torch.mm(hidden[rows], weight.t()).detach().requires_grad_()
                z = _sampling_logits(logits, ctx.temperature)
                objective = z.new_zeros(())
                if grad_logp is not None:
                    objective = objective + (token_logprobs(z, tokens[rows]) * grad_logp[rows]).sum()
                if grad_entropy is not None:
                    objective = objective + (entropy_from_logits(z) * grad_entropy[rows]).sum()
                (grad_logits,) = torch.autograd.grad(objective, logits)
            # the LM head's chain rule: dz/dh = W, dz/dW = h
            if need_hidden:
                grad_hidden[rows] = torch.mm(grad_logits, weight)
            if need_weight:
                grad_weight.addmm_(grad_logits.t(), hidden[rows])
        return grad_hidden, grad_weight, None, None, None, None
