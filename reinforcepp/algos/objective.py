"""The actor's objective: the one function the update minimizes, every term and its normalizer in one place.

Shapes: B sequences, T response positions; ``mask`` [B, T] is 1 on tokens that count. The order of the terms
is the one OpenRLHF, verl and TRL share where their options overlap: ratio (token or sequence) -> clip and
dual clip -> x the detached rollout-correction weight -> + beta * KL -> - entropy bonus, each reduced by the
same aggregation and the same global normalizers (/work/shared/research/algorithms_options.md, "How the
options compose").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .losses import aggregate, kl_loss, policy_loss
from .masked import masked_mean


@dataclass(frozen=True)
class ObjectiveSettings:
    """What the objective is made of. ``kl_coef`` is the weight of the KL *loss* term: 0 when the KL goes in
    the reward or nowhere (the caller decides, once)."""

    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None
    ratio_level: str = "token"  # "token" (PPO) or "sequence" (GSPO)
    tis_cap: float | None = None  # C of truncated importance sampling; None = no correction
    kl_coef: float = 0.0
    kl_estimator: str = "k2"
    kl_clamp: float | None = None
    kl_unbiased: bool = False
    entropy_coef: float = 0.0
    agg: str = "token-mean"
    token_norm: float | None = None


def tis_weights(old_logp: torch.Tensor, rollout_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance sampling for a sampler that computes differently from the trainer (Yao et al.
    2025, "Your efficient RL framework secretly brings you off-policy RL training"; verl tis_imp_ratio_cap):

        w_t = sg(min(pi_old(o_t) / pi_rollout(o_t), C)) = exp(min(old_logp_t - rollout_logp_t, log C))

    pi_old: the trainer's log-probs of the sampled tokens; pi_rollout: the sampler's, for the same weights.
    Shapes: old_logp [B, T], rollout_logp [B, T] -> [B, T], detached.
    """
    return (old_logp - rollout_logp).detach().clamp(max=math.log(cap)).exp()


def actor_objective(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    settings: ObjectiveSettings,
    *,
    entropy: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    rollout_logp: torch.Tensor | None = None,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The loss of the policy update (REINFORCE++ paper eq. 1 with GRPO's KL term, eq. 3, and an entropy bonus):

        L = agg(w * l^clip) + beta * agg(k(logp - ref_logp)) - c_H * agg(H)

    l^clip: :func:`policy_loss` (token or sequence ratio, clip, dual clip); w: :func:`tis_weights` when
    ``settings.tis_cap`` is set (it weights the surrogate only, as every peer does), else 1; beta =
    ``settings.kl_coef`` with :func:`kl_loss` (its unbiased gradient with ``kl_unbiased``, importance-weighted
    against pi_old); c_H = ``settings.entropy_coef``, H the token entropy (with grad). Each term is reduced by
    :func:`aggregate` with the same ``settings.agg`` and the optimizer step's global ``num_tokens`` /
    ``num_seqs``, so the sum over micro-batches is the step's loss.

    Args:
        logp: [B, T] log pi_theta of the sampled tokens (with grad).
        old_logp: [B, T] log pi_old (the trainer's, no grad).
        advantages: [B, T].
        mask: [B, T].
        entropy: [B, T], needed when entropy_coef > 0.
        ref_logp: [B, T] log pi_ref, needed when kl_coef > 0.
        rollout_logp: [B, T] the sampler's log-probs, needed when tis_cap is set; when given, the mean
            |old_logp - rollout_logp| is reported whether or not a cap is set.
    Returns:
        (loss [], terms, stats): ``terms`` the detached value of each term that is on (``pg_loss``, ``kl_loss``,
        ``entropy_loss`` = -c_H * agg(H)); ``stats`` :func:`policy_loss`'s statistics plus, with
        ``rollout_logp``, ``rollout_abs_log_ratio`` and, with a cap, ``tis_capped_frac`` (tokens whose weight
        is capped). All over this batch's valid tokens.
    """
    s = settings
    norm = {"agg": s.agg, "num_tokens": num_tokens, "num_seqs": num_seqs, "token_norm": s.token_norm}
    weights = None
    extra: dict[str, torch.Tensor] = {}
    if rollout_logp is not None:
        with torch.no_grad():
            gap = old_logp - rollout_logp
            extra["rollout_abs_log_ratio"] = masked_mean(gap.abs(), mask)
            if s.tis_cap is not None:
                extra["tis_capped_frac"] = masked_mean((gap > math.log(s.tis_cap)).float(), mask)
    if s.tis_cap is not None:
        if rollout_logp is None:
            raise ValueError("actor_objective: tis_cap needs rollout_logp, the sampler's log-probs")
        weights = tis_weights(old_logp, rollout_logp, s.tis_cap)
    loss, stats = policy_loss(
        logp, old_logp, advantages, mask, clip_low=s.clip_low, clip_high=s.clip_high, dual_clip=s.dual_clip,
        ratio_level=s.ratio_level, weights=weights, **norm,
    )
    terms = {"pg_loss": loss.detach()}
    if s.kl_coef > 0:
        if ref_logp is None:
            raise ValueError("actor_objective: a KL loss term (kl_coef > 0) needs ref_logp")
        kl = kl_loss(logp, ref_logp, mask, s.kl_estimator, clamp=s.kl_clamp,
                     unbiased_old_logp=old_logp if s.kl_unbiased else None, **norm)
        terms["kl_loss"] = kl.detach()
        loss = loss + s.kl_coef * kl
    if s.entropy_coef > 0:
        if entropy is None:
            raise ValueError("actor_objective: an entropy bonus (entropy_coef > 0) needs entropy")
        bonus = -s.entropy_coef * aggregate(entropy, mask, **norm)
        terms["entropy_loss"] = bonus.detach()
        loss = loss + bonus
    return loss, terms, {**stats, **extra}
