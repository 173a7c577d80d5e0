"""Pure functions on next-token logits: temperature, top-k, top-p, sampling, greedy, log-probs.

Shapes: ``logits`` is ``[B, V]`` (one row per sequence, V = vocabulary size); tokens and log-probs are ``[B]``.
Filtered-out entries are set to ``-inf``. The order HF uses, and :func:`sample_next` follows, is temperature,
then top-k, then top-p.

Sampling draws one uniform number per row and inverts the row's cumulative distribution (what
``torch.multinomial`` does for one sample, minus its overhead); a seeded ``torch.Generator`` makes it
reproducible, or the caller passes the uniforms themselves (per-row streams, :mod:`.streams`).
"""

from __future__ import annotations

import torch

from reinforcepp.algos.logprobs import token_logprobs  # the one copy of log softmax(z)[o]

__all__ = [
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "sample_from_logits",
    "greedy_tokens",
    "token_logprobs",
    "sample_next",
]

_NEG_INF = float("-inf")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature`` ([B, V] -> [B, V]); returns ``logits`` itself when the temperature is 1."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to sample (use greedy decoding instead), got {temperature}")
    if temperature == 1.0:
        return logits
    return logits / temperature


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` largest logits of each row, set the rest to -inf ([B, V] -> [B, V]).

    Like HF's ``TopKLogitsWarper``: a logit is removed iff it is strictly below the k-th largest, so ties
    with the k-th value are kept. ``top_k <= 0`` or ``top_k >= V`` is a no-op (returns ``logits``).
    """
    vocab = logits.shape[-1]
    if top_k <= 0 or top_k >= vocab:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, _NEG_INF)


def top_p_filter(logits: torch.Tensor, top_p: float, *, candidates: int = 256) -> torch.Tensor:
    """Nucleus filter ([B, V] -> [B, V]): keep the smallest set of most likely tokens whose probability mass
    is >= ``top_p`` (always at least the most likely token); the rest become -inf.

    Same rule as HF's ``TopPLogitsWarper``: a token is removed iff the mass of the tokens ranked strictly
    above it (in descending order) is already >= ``top_p``. ``top_p >= 1`` is a no-op. Instead of sorting the
    whole vocabulary (slow on CPU for large V), the rule is applied to the ``candidates`` most likely tokens,
    and the candidate set grows (x4) until it holds mass >= ``top_p`` in every row; the result is the same.
    """
    if top_p >= 1.0:
        return logits
    vocab = logits.shape[-1]
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    k = max(1, min(candidates, vocab))
    while True:
        values, indices = torch.topk(logits, k, dim=-1)  # sorted, descending
        cum = (values - lse).exp().cumsum(dim=-1)
        if k == vocab or bool((cum[..., -1] >= top_p).all()):
            break
        k = min(vocab, k * 4)
    before = torch.cat([torch.zeros_like(cum[..., :1]), cum[..., :-1]], dim=-1)  # mass ranked strictly above
    keep = before < top_p
    keep[..., 0] = True  # at least one token
    remove = torch.ones_like(logits, dtype=torch.bool).scatter_(-1, indices, ~keep)
    return logits.masked_fill(remove, _NEG_INF)


def _uniform(rows: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """[rows, 1] uniform numbers in [0, 1) on ``like``'s device, drawn from ``generator`` (on its own device)."""
    device = generator.device if generator is not None else like.device
    u = torch.rand(rows, 1, generator=generator, device=device, dtype=torch.float32)
    return u.to(like.device)


def _invert_cdf(weights: torch.Tensor, generator: torch.Generator | None,
                uniforms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one index per row with probability proportional to ``weights`` ([B, V], >= 0, rows not all 0),
    with the given ``uniforms`` [B] in [0, 1) or ones drawn from ``generator``.

    Returns (tokens [B] int64, row totals [B, 1]). Zero-weight entries are never drawn.
    """
    cdf = weights.cumsum(dim=-1)
    total = cdf[..., -1:]
    u = _uniform(cdf.shape[0], cdf, generator) if uniforms is None else uniforms.to(cdf.device, torch.float32)[:, None]
    target = u * total
    # u < 1, but u * total can round up to total; the first index with cdf > target must exist.
    target = torch.minimum(target, torch.nextafter(total, torch.zeros_like(total)))
    tokens = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return tokens, total


def sample_from_logits(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row from softmax(logits) ([B, V] -> [B] int64); -inf entries are never drawn."""
    logits = logits.float()
    weights = (logits - logits.amax(dim=-1, keepdim=True)).exp_()
    return _invert_cdf(weights, generator)[0]


def greedy_tokens(logits: torch.Tensor) -> torch.Tensor:
    """argmax of each row ([B, V] -> [B] int64)."""
    return logits.argmax(dim=-1)


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    banned: torch.Tensor | None = None,
    uniforms: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step: (tokens [B] int64, logprobs [B] float32) from next-token ``logits`` [B, V].

    Sampling: temperature, then the ``banned`` ids (e.g. EOS before min_new_tokens, as HF's
    min_new_tokens) removed, then top-k, then top-p, then one draw per row. ``logprobs`` are
    log softmax(logits / temperature) of the drawn token, i.e. of the distribution *before* any of these
    truncations (what a trainer recomputes from the policy). ``uniforms`` [B], when given, are the draws
    (instead of ``generator``'s). Greedy: argmax over the ids not banned,
    logprobs at temperature 1. Uses fewer passes over [B, V] than composing the functions above (it
    matters for large vocabularies).
    """
    logits = logits.float()
    if greedy:
        allowed = logits if banned is None else logits.index_fill(-1, banned, _NEG_INF)
        tokens = allowed.argmax(dim=-1)
        return tokens, token_logprobs(logits, tokens)
    z = apply_temperature(logits, temperature)
    zmax = z.amax(dim=-1, keepdim=True)
    weights = (z - zmax).exp_()  # unnormalised softmax(z)
    filtered = (0 < top_k < z.shape[-1]) or top_p < 1.0 or banned is not None
    if filtered:
        allowed = z if banned is None else z.index_fill(-1, banned, _NEG_INF)
        zf = top_p_filter(top_k_filter(allowed, top_k), top_p)
        tokens, _ = _invert_cdf(weights.masked_fill(zf == _NEG_INF, 0.0), generator, uniforms)
        total = weights.sum(dim=-1, keepdim=True)
    else:
        tokens, total = _invert_cdf(weights, generator, uniforms)
    picked = z.gather(-1, tokens.unsqueeze(-1))
    logprobs = (picked - zmax - total.log()).squeeze(-1)
    return tokens, logprobs
