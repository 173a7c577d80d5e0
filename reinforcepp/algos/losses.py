"""Training losses: the PPO clipped surrogate, the clipped value loss, KL as a loss term, entropy.

Shapes: B sequences, T response positions, V vocabulary. ``mask`` [B, T] is 1 on tokens that count.

Every loss is a per-token matrix reduced by ``aggregate``. Under gradient accumulation the caller
passes the *global* normalizer of the optimizer step (``num_tokens``, ``num_seqs``): the sum of the
micro-batch losses is then exactly the loss of the whole step, whatever the micro-batch split
(the bug class of OpenRLHF PR #1249 and verl #5625).
"""

from __future__ import annotations

import math

import torch

from .dtypes import compute_dtype
from .kl import kl_estimate
from .masked import masked_mean, masked_sum

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
# Bound on |log pi - log pi_old| before exp(): a ratio of e^20 is already meaningless, and it keeps
# one stale token from producing inf (OpenRLHF and verl clamp at 20 too).
LOG_RATIO_CLAMP = 20.0
# Cap of the importance weight of the unbiased KL-loss gradient (OpenRLHF's KL_IS_WEIGHT_CLIP).
KL_IS_WEIGHT_CLIP = 10.0


def aggregate(
    loss: torch.Tensor,
    mask: torch.Tensor,
    agg: str = "token-mean",
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
    token_norm: float | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss [B, T] to a scalar.

        token-mean:              sum_{b,t} m l / N_tok               (DAPO; the default)
        seq-mean-token-mean:     sum_b (sum_t m l / sum_t m) / N_seq (original GRPO)
        seq-mean-token-sum-norm: sum_{b,t} m l / (N_seq * C)         (Dr.GRPO: a constant C, no length bias)

    N_tok (``num_tokens``) and N_seq (``num_seqs``) default to this batch's valid-token count and
    non-empty-sequence count; pass the optimizer step's global counts under micro-batching.
    C (``token_norm``) defaults to T; pass the generation budget (max new tokens) so that it does not
    depend on padding.
    """
    if agg == "token-mean":
        denom = mask.sum() if num_tokens is None else num_tokens
        return masked_sum(loss, mask) / torch.as_tensor(denom, dtype=loss.dtype).clamp(min=1.0)
    seq_lens = mask.to(loss.dtype).sum(dim=1)  # [B]
    if num_seqs is None:
        num_seqs = (seq_lens > 0).sum()
    num_seqs = torch.as_tensor(num_seqs, dtype=loss.dtype).clamp(min=1.0)
    if agg == "seq-mean-token-mean":
        per_seq = masked_sum(loss, mask, dim=1) / seq_lens.clamp(min=1.0)  # [B]
        return per_seq.sum() / num_seqs
    if agg == "seq-mean-token-sum-norm":
        C = float(loss.shape[1] if token_norm is None else token_norm)
        return masked_sum(loss, mask) / (num_seqs * C)
    raise ValueError(f"unknown loss aggregation {agg!r}; expected one of {AGGREGATIONS}")


RATIO_LEVELS = ("token", "sequence")


def importance_ratio(
    logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor, level: str = "token"
) -> torch.Tensor:
    """The PPO importance ratio of each token, per token or per sequence.

        token:    r_t = pi_theta(o_t) / pi_old(o_t) = exp(logp_t - old_logp_t)                    (PPO)
        sequence: s_i = (pi_theta(y_i) / pi_old(y_i))^(1/|y_i|) = exp(sum_t m_t (logp_t - old_logp_t) / |y_i|),
                  given to every token as s_{i,t} = sg(s_i) * exp(logp_t - sg(logp_t))
                  (GSPO-token, Zheng et al. 2025, arXiv 2507.18071, eq. 13-14)

    GSPO-token has GSPO's value (s_{i,t} = s_i) and, for an advantage constant over the sequence, GSPO's
    gradient s_i * A_i * grad logp_t / |y_i| under seq-mean-token-mean; unlike GSPO's mean inside the exp it
    keeps a per-token advantage its own (verl's compute_policy_loss_gspo). The (mean) log-ratio is clamped to
    [-20, 20] before exp(). An empty row (|y_i| = 0) has ratio 1.

    Shapes: logp [B, T] (with grad), old_logp [B, T], mask [B, T] -> [B, T].
    """
    if level == "token":
        return (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()
    if level == "sequence":
        lengths = mask.to(logp.dtype).sum(dim=1).clamp(min=1.0)  # [B]
        seq_log_ratio = masked_sum((logp - old_logp).detach(), mask, dim=1) / lengths  # [B]
        seq_log_ratio = seq_log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        return (seq_log_ratio[:, None] + logp - logp.detach()).exp()  # value s_i, gradient s_i * grad logp_t
    raise ValueError(f"unknown ratio level {level!r}; expected one of {RATIO_LEVELS}")


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    ratio_level: str = "token",
    weights: torch.Tensor | None = None,
    agg: str = "token-mean",
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
    token_norm: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate (paper eq. 1), with clip-higher (DAPO) and dual clip (Ye et al. 2020).

        rho_t  = importance_ratio(logp, old_logp, mask, ratio_level)     (exp(logp - old_logp) per token)
        l_t    = -min(rho_t * A_t, clip(rho_t, 1 - eps_low, 1 + eps_high) * A_t)
        dual:  l_t = min(l_t, -c * A_t)  for A_t < 0     (the objective is bounded below by c * A_t)
        loss   = aggregate(w * l, mask, agg)             (w = ``weights``, detached; 1 when None)

    Args:
        logp: [B, T] log-probs of the sampled tokens under the current policy (with grad).
        old_logp: [B, T] the same under the rollout policy pi_old (no grad).
        advantages: [B, T].
        dual_clip: c > 1, or None for no dual clip.
        ratio_level: "token" (PPO) or "sequence" (GSPO: one clipped ratio per sequence).
        weights: [B, T] per-token loss weights applied after the clip (truncated importance sampling).
    Returns:
        (loss [], stats) where stats holds detached [] tensors over this batch's valid tokens:
        ``clip_frac`` (tokens whose clipped branch is active), ``clip_frac_low`` / ``clip_frac_high``
        (ratio below 1 - eps_low with A < 0 / above 1 + eps_high with A > 0), ``dual_clip_frac``,
        ``approx_kl`` (k1 of pi_old against pi_theta: mean of old_logp - logp) and ``approx_kl_k3``.
    """
    ratio = importance_ratio(logp, old_logp, mask, ratio_level)  # [B, T]
    surr = ratio * advantages
    surr_clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    loss = -torch.minimum(surr, surr_clipped)  # [B, T]
    dual_active = torch.zeros_like(mask, dtype=torch.bool)
    if dual_clip is not None:
        dual_active = (advantages < 0) & (loss > -dual_clip * advantages)
        loss = torch.where(dual_active, -dual_clip * advantages, loss)
    if weights is not None:
        loss = loss * weights.detach()

    with torch.no_grad():
        d = old_logp - logp  # log pi_old / pi_theta on tokens sampled from pi_old
        stats = {
            "clip_frac": masked_mean((surr_clipped < surr).float(), mask),
            "clip_frac_low": masked_mean(((ratio < 1.0 - clip_low) & (advantages < 0)).float(), mask),
            "clip_frac_high": masked_mean(((ratio > 1.0 + clip_high) & (advantages > 0)).float(), mask),
            "dual_clip_frac": masked_mean(dual_active.float(), mask),
            "approx_kl": masked_mean(d, mask),
            "approx_kl_k3": masked_mean(torch.expm1(-d) + d, mask),
        }
    total = aggregate(loss, mask, agg, num_tokens=num_tokens, num_seqs=num_seqs, token_norm=token_norm)
    return total, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float | None = 0.5,
    agg: str = "token-mean",
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
    token_norm: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss of PPO's critic (Schulman et al. 2017; OpenRLHF ``ValueLoss``).

        V_clip = V_old + clip(V - V_old, -c, c)                     (c absolute, default 0.5)
        l_t    = 1/2 * max((V_t - R_t)^2, (V_clip_t - R_t)^2)       (1/2 * (V_t - R_t)^2 when c is None)

    Shapes: values [B, T] (with grad), old_values [B, T], returns [B, T], mask [B, T] ->
    (loss [], stats {"value_clip_frac": []}).
    """
    err = (values - returns).square()
    if clip is None:
        loss = 0.5 * err
        clipped = torch.zeros_like(mask, dtype=torch.bool)
    else:
        values_clipped = old_values + (values - old_values).clamp(-clip, clip)
        err_clipped = (values_clipped - returns).square()
        loss = 0.5 * torch.maximum(err, err_clipped)
        clipped = err_clipped > err
    stats = {"value_clip_frac": masked_mean(clipped.float(), mask).detach()}
    total = aggregate(loss, mask, agg, num_tokens=num_tokens, num_seqs=num_seqs, token_norm=token_norm)
    return total, stats


def kl_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    estimator: str = "k2",
    *,
    clamp: float | None = None,
    unbiased_old_logp: torch.Tensor | None = None,
    agg: str = "token-mean",
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
    token_norm: float | None = None,
) -> torch.Tensor:
    """KL to the reference as a loss term, added to the policy loss as beta * kl_loss (GRPO eq. 3).

        loss = aggregate(k(logp - ref_logp), mask)      k = k2 (REINFORCE++-baseline) or k3 (GRPO)

    The gradient flows through ``logp``. On-policy, E[grad k2] = grad KL(pi || ref) exactly, while
    E[grad k3] = grad KL(ref || pi) and E[grad k1] = 0 (tests/algos/test_kl_closed_form.py).

    With ``unbiased_old_logp`` (log pi_old, the policy that sampled the tokens) the per-token term is
    OpenRLHF's ``unbiased_gradient`` (compute_approx_kl, PR #1309): with d = logp - ref_logp,

        w_t = sg(min(exp(logp_t - old_logp_t), 10))
        l_t = sg(k_t) + w_t d_t^2 / 2 - sg(w_t d_t^2 / 2)       value k_t, gradient w_t d_t grad logp_t

    and E_{o ~ pi_old}[w d grad logp] = grad KL(pi || ref) exactly, whatever the estimator k (which then only
    sets the logged value) and however far pi_old is from pi while the weight is below 10. ``clamp`` bounds
    the value, not the gradient (as OpenRLHF).

    Shapes: logp [B, T] (with grad), ref_logp [B, T], mask [B, T], unbiased_old_logp [B, T] -> [].
    """
    ref_logp = ref_logp.detach()
    per_token = kl_estimate(logp, ref_logp, estimator, clamp=clamp)
    if unbiased_old_logp is not None:
        dtype = per_token.dtype
        with torch.no_grad():
            log_w = (logp.to(dtype) - unbiased_old_logp.to(dtype)).clamp(max=math.log(KL_IS_WEIGHT_CLIP))
        surrogate = log_w.exp() * 0.5 * (logp.to(dtype) - ref_logp.to(dtype)).square()
        per_token = per_token.detach() + surrogate - surrogate.detach()
    return aggregate(per_token, mask, agg, num_tokens=num_tokens, num_seqs=num_seqs, token_norm=token_norm)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Token entropy H_t = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v, with p = softmax(z).

    Shapes: logits [B, T, V] -> [B, T], float32 (float64 for float64 input).
    """
    z = logits.to(compute_dtype(logits))
    p = torch.softmax(z, dim=-1)
    return torch.logsumexp(z, dim=-1) - (p * z).sum(dim=-1)


def sft_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    num_tokens: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Masked token cross-entropy of supervised fine-tuning, averaged over response tokens.

        l_t  = -log softmax(z_t)[y_t]                      (z = logits, y = targets)
        loss = sum_{b,t} m_{b,t} l_{b,t} / N_tok

    logits [B, T, V] (any float dtype; computed in at least float32), targets [B, T] token ids, mask [B, T]
    (1 on response tokens, 0 on prompt and padding; the target id under a 0 is ignored, so it may be
    anything in [0, V)). Position t predicts targets[:, t]: the caller has already shifted by one.
    N_tok (``num_tokens``) defaults to mask.sum(); under micro-batching pass the optimizer step's
    global count so the sum of the micro-batch losses is the step's loss. Returns a scalar.
    """
    if logits.shape[:2] != targets.shape or targets.shape != mask.shape:
        raise ValueError(
            f"sft_loss: logits {tuple(logits.shape)}, targets {tuple(targets.shape)} and mask "
            f"{tuple(mask.shape)} must agree on [B, T]"
        )
    logits = logits.to(compute_dtype(logits))
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long(), reduction="none"
    ).view(targets.shape)  # [B, T]
    mask = mask.to(nll.dtype)
    return aggregate(nll, mask, "token-mean", num_tokens=num_tokens)


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    *,
    num_pairs: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bradley-Terry reward-model loss (paper eq. 11) and pairwise accuracy.

        loss = -sum_i log sigmoid(r(q_i, o_i^+) - r(q_i, o_i^-)) / N
        acc  = mean_i 1[r(q_i, o_i^+) > r(q_i, o_i^-)]          (a tie counts as wrong)

    chosen_rewards, rejected_rewards: [B] scores of the preferred and the other response to the same
    prompt. log sigmoid is ``F.logsigmoid`` (log(1 + e^-m) without overflow for any margin m).
    N (``num_pairs``) defaults to B; under micro-batching pass the optimizer step's global pair count.
    Returns (loss scalar, accuracy scalar; the accuracy is over this batch and carries no gradient).
    """
    if chosen_rewards.shape != rejected_rewards.shape or chosen_rewards.dim() != 1:
        raise ValueError(
            f"bradley_terry_loss: chosen {tuple(chosen_rewards.shape)} and rejected "
            f"{tuple(rejected_rewards.shape)} must both be [B]"
        )
    dtype = compute_dtype(chosen_rewards, rejected_rewards)
    margin = chosen_rewards.to(dtype) - rejected_rewards.to(dtype)  # [B]
    denom = margin.numel() if num_pairs is None else num_pairs
    loss = -torch.nn.functional.logsigmoid(margin).sum() / torch.as_tensor(denom, dtype=margin.dtype).clamp(min=1.0)
    accuracy = (margin.detach() > 0).float().mean() if margin.numel() else margin.new_zeros(())
    return loss, accuracy
