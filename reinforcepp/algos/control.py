"""What decides a step's batch and KL weight, as pure functions: the adaptive KL coefficient, DAPO's
dynamic-sampling rule, and the truncated-response mask.

Shapes: P prompts, G samples per prompt (contiguous), B = P * G sequences, T response positions.
"""

from __future__ import annotations

import torch

from .kl import kl_estimate

# Ziegler et al.'s bound on the proportional error: beta moves by at most a factor 1 +- 0.2 * n / H a step.
KL_ERROR_CLIP = 0.2


def adaptive_kl_coef(coef: float, kl: float, target: float, horizon: int, n_samples: int) -> float:
    """The next KL coefficient of the proportional controller (Ziegler et al. 2019, arXiv 1909.08593, sec. 2.2;
    OpenRLHF ``AdaptiveKLController``, verl ``AdaptiveKLController``: the same code):

        e        = clip(KL / target - 1, -0.2, 0.2)
        beta_new = beta * (1 + e * n / H)

    n (``n_samples``) is the number of samples in the step (OpenRLHF: rollout.batch_size x
    n_samples_per_prompt), so the horizon H counts samples, not steps. ``kl``: :func:`sequence_mean_kl`.
    """
    error = min(max(kl / target - 1.0, -KL_ERROR_CLIP), KL_ERROR_CLIP)
    return coef * (1.0 + error * n_samples / horizon)


def sequence_mean_kl(old_logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, estimator: str, *,
                     clamp: float | None = None) -> torch.Tensor:
    """The KL the adaptive controller reads (pinned, as trlx PR #361 warns it must be): each sequence's token
    mean of the per-token estimate k_t(pi_old || pi_ref), averaged over the sequences that have tokens
    (OpenRLHF's reward mode and verl ``apply_kl_penalty``):

        KL = 1/|S| sum_{b in S} (sum_t m_bt k_bt / sum_t m_bt),   S = {b : sum_t m_bt > 0}

    Shapes: old_logp, ref_logp, mask [B, T] -> [] (float64).
    """
    k = kl_estimate(old_logp.double(), ref_logp.double(), estimator, clamp=clamp)
    m = mask.double()
    tokens = m.sum(dim=1)
    has_tokens = tokens > 0
    per_seq = torch.where(m.bool(), k, 0.0).sum(dim=1)[has_tokens] / tokens[has_tokens]
    return per_seq.mean() if len(per_seq) else torch.zeros((), dtype=torch.float64)


def informative_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """DAPO dynamic sampling (Yu et al. 2025, arXiv 2503.14476, eq. 11): keep a prompt's group iff its rewards
    are not all equal. verl's rule (std of the group > 0); on 0/1 rewards it is DAPO's 0 < #correct < G.
    Under a group baseline (GRPO, Dr.GRPO, RLOO, REINFORCE++-baseline) an all-equal group has advantage 0.

        keep_p = max_g R_pg > min_g R_pg

    Shapes: rewards [B] (finite) -> keep [P] bool.
    """
    groups = rewards.view(-1, group_size)
    return groups.amax(dim=1) > groups.amin(dim=1)


def truncation_mask(response_mask: torch.Tensor, finished: torch.Tensor) -> torch.Tensor:
    """DAPO's overlong filtering (Yu et al. 2025, sec. 3.4; TRL ``mask_truncated_completions``): a response cut at
    max_new_tokens without EOS or a stop string leaves the loss, every token masked:

        m_bt <- m_bt * 1[finished_b]

    A response that ends in EOS exactly at the limit is finished, so it stays.
    Shapes: response_mask [B, T], finished [B] bool -> [B, T], response_mask's dtype.
    """
    return response_mask * finished[:, None].to(response_mask.dtype)
