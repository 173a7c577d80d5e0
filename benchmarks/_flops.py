"""FLOPs an RL step needs, for a Llama-shaped decoder: pure functions (no torch), checked by hand in
tests/benchmarks/test_flops.py.

Convention (the usual MFU one): a multiply-add is 2 FLOPs; a backward pass costs twice its forward (so a
forward+backward is 3x the forward: 6N per token for the weights). Only matmuls are counted: the weight
matmuls (attention projections, SwiGLU MLP, LM head; the embedding lookup is free), and attention's
scores QK^T and mix AV over the keys each query really needs (causal: a token at position i sees i + 1 keys;
the "needed" count, not the full square some kernels compute). Norms, RoPE, softmax, sampling and the
optimizer are left out (O(hidden) per token, noise next to the matmuls).

An RL step, per phase (what our trainer needs, not what a given implementation happens to compute):

    rollout_prefill  each distinct prompt once (the engine shares it between its n samples), LM head on the
                     last prompt position only
    rollout_decode   T - 1 one-token forwards per sequence (the first response token comes from the prefill's
                     logits; the last sampled token is never fed back), LM head on that token
    old_logp         a forward over prompt + response, LM head on the T response positions (not needed when the
                     update is one pass with no KL in the reward: log pi_old is then the training forward's)
    ref_logp         the same with the reference model (when there is a KL term)
    critic_values    the critic's forward (PPO): no LM head, a scalar value head on the T positions
    actor_train      3 x old_logp per epoch (forward + backward)
    critic_train     3 x critic_values per epoch
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PHASES = ("rollout_prefill", "rollout_decode", "old_logp", "ref_logp", "critic_values", "actor_train",
          "critic_train")


@dataclass(frozen=True)
class ModelShape:
    """A Llama decoder: SwiGLU MLP, grouped-query attention, optional tied embeddings."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int | None = None  # None: hidden // heads
    tied: bool = True

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def layer_matmul_params(self) -> int:
        """Weights of one decoder layer's matmuls: q, k, v, o and the three MLP projections."""
        h, hd = self.hidden, self.hd
        return h * self.heads * hd + 2 * h * self.kv_heads * hd + self.heads * hd * h + 3 * h * self.intermediate


def num_params(shape: ModelShape) -> int:
    """All parameters (embeddings, layers, RMSNorm weights; the LM head once more when untied)."""
    per_layer = shape.layer_matmul_params() + 2 * shape.hidden
    embed = shape.vocab * shape.hidden
    return embed * (1 if shape.tied else 2) + shape.layers * per_layer + shape.hidden


def forward_flops(shape: ModelShape, new_tokens: int, logits_positions: int, past: int = 0) -> int:
    """One sequence's forward over ``new_tokens`` tokens that follow ``past`` cached ones.

        weights    2 * new_tokens * layers * layer_matmul_params
        attention  4 * layers * heads * head_dim * sum_{i=1..new_tokens} (past + i)      (QK^T and AV)
        LM head    2 * logits_positions * hidden * vocab
    """
    if new_tokens < 0 or logits_positions < 0 or past < 0:
        raise ValueError("token counts must be >= 0")
    weights = 2 * new_tokens * shape.layers * shape.layer_matmul_params()
    keys = new_tokens * past + new_tokens * (new_tokens + 1) // 2  # keys seen, summed over the new tokens
    attention = 4 * shape.layers * shape.heads * shape.hd * keys
    head = 2 * logits_positions * shape.hidden * shape.vocab
    return weights + attention + head


def rl_step_flops(
    shape: ModelShape,
    prompt_lens: Sequence[int],
    n: int,
    response_len: int,
    *,
    reference: bool = True,
    old_pass: bool = True,
    critic: bool = False,
    epochs: int = 1,
    dedup_prefill: bool = True,
) -> dict[str, int]:
    """FLOPs of one RL step by phase (see the module docstring) and their ``total``.

    ``prompt_lens``: the token count of each distinct prompt of the step; ``n`` samples per prompt; every
    response is ``response_len`` tokens (EOS masked). The critic has the policy's shape.
    """
    T = response_len
    out = dict.fromkeys(PHASES, 0)
    for lp in prompt_lens:
        out["rollout_prefill"] += forward_flops(shape, lp, 1) * (1 if dedup_prefill else n)
        decode = sum(forward_flops(shape, 1, 1, past=lp + t - 1) for t in range(1, T))
        score = forward_flops(shape, lp + T, T)
        value = forward_flops(shape, lp + T, 0) + 2 * T * shape.hidden
        out["rollout_decode"] += n * decode
        if old_pass:
            out["old_logp"] += n * score
        if reference:
            out["ref_logp"] += n * score
        if critic:
            out["critic_values"] += n * value
        out["actor_train"] += 3 * epochs * n * score
        if critic:
            out["critic_train"] += 3 * epochs * n * value
    out["total"] = sum(out[p] for p in PHASES)
    return out


def decode_token_flops(shape: ModelShape, context: int) -> int:
    """One decoded token at a KV cache of ``context`` tokens (it attends context + 1 keys)."""
    return forward_flops(shape, 1, 1, past=context)


TINY = ModelShape(vocab=16, hidden=256, intermediate=1024, layers=4, heads=4, kv_heads=4)
SMOL = ModelShape(vocab=49152, hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3)
