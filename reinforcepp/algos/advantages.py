"""Advantage estimators: REINFORCE++ (arXiv 2501.03262) and the methods it is measured against.

Notation and shapes: P prompts, G samples per prompt (``group_size``), B = P * G sequences with the G
samples of a prompt contiguous (so ``rewards.view(P, G)`` is a group), T response positions.
``rewards`` [B] are scalar sequence rewards, ``mask`` [B, T] is 1 on response tokens (right padded).

Every estimator runs the same four stages (the order of OpenRLHF, the authors' implementation):

    1. group shaping of the scalar reward R_i          ``shape_rewards``
    2. token rewards r_t = -beta * kl_t (+ shaped R on the last valid token)   ``token_rewards``
    3. returns G_t = sum_{i >= t} gamma^(i - t) r_i, or GAE with a critic       ``discounted_returns`` / ``gae``
    4. global z-score over all valid tokens of the batch (REINFORCE++, -baseline, GAE)  ``masked_whiten``

| estimator             | 1. shaping of R_i                         | 4. batch whitening |
|-----------------------|-------------------------------------------|--------------------|
| reinforce_pp          | none                                      | yes                |
| reinforce_pp_baseline | R_i - mean_group(R)                       | yes                |
| grpo                  | (R_i - mean) / (std_unbiased + 1e-6); 0 if the group is constant | no |
| dr_grpo               | R_i - mean_group(R)                       | no                 |
| rloo                  | R_i - mean of the other G - 1 samples     | no                 |
| remax                 | R_i - R(greedy response to the prompt)    | no                 |
| gae                   | none (critic values V_t in stage 3)       | yes                |
"""

from __future__ import annotations

import torch

from .dtypes import compute_dtype
from .masked import last_token_index, masked_whiten

ESTIMATORS = ("reinforce_pp", "reinforce_pp_baseline", "grpo", "dr_grpo", "rloo", "remax", "gae")
# Estimators whose baseline compares the samples of one prompt: they need group_size >= 2.
GROUP_ESTIMATORS = frozenset({"reinforce_pp_baseline", "grpo", "dr_grpo", "rloo"})
# Estimators whose advantages are z-scored over all valid tokens of the global batch.
WHITENED_ESTIMATORS = frozenset({"reinforce_pp", "reinforce_pp_baseline", "gae"})
# GRPO's std epsilon (verl's; OpenRLHF uses 1e-9). Constant groups are zeroed explicitly instead of
# relying on it, so float residue in a "zero" std cannot blow an advantage up (NeMo-RL PR #4161).
GRPO_STD_EPS = 1e-6


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B] -> [P, G] view of contiguous groups; raises if B is not a multiple of G."""
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be 1-D with a length divisible by group_size={group_size}, "
            f"got shape {tuple(rewards.shape)}"
        )
    return rewards.view(-1, group_size)


def shape_rewards(
    estimator: str,
    rewards: torch.Tensor,
    group_size: int = 1,
    greedy_rewards: torch.Tensor | None = None,
) -> torch.Tensor:
    """Stage 1: the scalar reward each sequence receives on its last token, after its baseline.

        reinforce_pp, gae:            R_i
        reinforce_pp_baseline, dr_grpo: R_i - mean_g(R)                  (REINFORCE++-baseline, Dr.GRPO)
        grpo:   (R_i - mean_g(R)) / (std_g(R) + 1e-6), std unbiased; 0 for a constant group  (GRPO eq. 3)
        rloo:   R_i - 1/(G-1) * sum_{j != i} R_j                         (RLOO)
        remax:  R_i - R(greedy_i)                                        (ReMax)

    Shapes: rewards [B], greedy_rewards [B] (the greedy reward of each sample's prompt) -> [B].
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; expected one of {ESTIMATORS}")
    if estimator in GROUP_ESTIMATORS and group_size < 2:
        raise ValueError(
            f"estimator {estimator!r} compares the samples of one prompt and needs group_size >= 2 "
            f"(got {group_size}); with one sample every advantage would be 0"
        )
    if estimator in ("reinforce_pp", "gae"):
        return rewards.clone()
    if estimator == "remax":
        if greedy_rewards is None or greedy_rewards.shape != rewards.shape:
            got = None if greedy_rewards is None else tuple(greedy_rewards.shape)
            raise ValueError(f"remax needs greedy_rewards of shape {tuple(rewards.shape)}, got {got}")
        return rewards - greedy_rewards

    groups = _groups(rewards, group_size)  # [P, G]
    mean = groups.mean(dim=1, keepdim=True)  # [P, 1]
    if estimator in ("reinforce_pp_baseline", "dr_grpo"):
        shaped = groups - mean
    elif estimator == "rloo":
        shaped = groups - (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    else:  # grpo
        std = groups.std(dim=1, keepdim=True, unbiased=True)  # [P, 1]
        constant = groups.amax(dim=1, keepdim=True) == groups.amin(dim=1, keepdim=True)
        shaped = torch.where(constant, torch.zeros_like(groups), (groups - mean) / (std + GRPO_STD_EPS))
    return shaped.reshape(-1)


def last_token_mask(mask: torch.Tensor) -> torch.Tensor:
    """1 at the last valid token of each row (the last 1, so masks with holes work), else 0.

    Shapes: mask [B, T] -> [B, T] bool. A row without valid tokens stays all False.
    """
    valid = mask.bool()
    rows = valid.any(dim=1).nonzero().flatten()  # rows with a last token
    onehot = torch.zeros_like(valid)
    onehot[rows, last_token_index(valid[rows])] = True
    return onehot


def token_rewards(
    scores: torch.Tensor,
    mask: torch.Tensor,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> torch.Tensor:
    """Stage 2: per-token rewards, paper eq. 8-9.

        r_t = -beta * KL_t + 1[t = last valid token] * R_shaped,     0 on padding

    with beta = ``kl_coef`` and KL_t the per-token estimate (k1 of pi_old against pi_SFT in REINFORCE++).
    KL on padding is dropped *before* any return is summed, so it cannot leak into earlier tokens.

    Shapes: scores [B], mask [B, T], kl [B, T] or None -> [B, T].
    """
    valid = mask.bool()
    dtype = compute_dtype(scores)
    out = torch.where(last_token_mask(valid), scores.to(dtype)[:, None], 0.0)
    if kl is not None and kl_coef != 0.0:
        if kl.shape != mask.shape:
            raise ValueError(f"kl must have the shape of mask {tuple(mask.shape)}, got {tuple(kl.shape)}")
        out = out - kl_coef * torch.where(valid, kl.to(dtype), 0.0)
    return out


def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Stage 3 (no critic): G_t = sum_{valid i >= t} gamma^(i - t) r_i, i.e. G_t = r_t + gamma * G_{t+1}.

    Shapes: token_rewards [B, T], mask [B, T] -> [B, T], 0 on padding.
    """
    valid = mask.bool()
    r = torch.where(valid, token_rewards, 0.0)
    if gamma == 1.0:
        returns = r.flip(dims=[1]).cumsum(dim=1).flip(dims=[1])  # reverse cumulative sum
    else:
        returns = torch.zeros_like(r)
        running = torch.zeros_like(r[:, 0])
        for t in reversed(range(r.shape[1])):
            running = r[:, t] + gamma * running
            returns[:, t] = running
    return torch.where(valid, returns, 0.0)


def gae(
    token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 3 with a critic: generalized advantage estimation (Schulman et al. 2016, eq. 16).

        delta_t = r_t + gamma * V_{t+1} - V_t,     V after the last token = 0
        A_t     = delta_t + gamma * lam * A_{t+1}
        returns = A + V                            (the critic's regression targets)

    Rewards and values are zeroed on padding first (as OpenRLHF does).

    Shapes: token_rewards [B, T], values [B, T], mask [B, T] -> (advantages [B, T], returns [B, T]).
    """
    valid = mask.bool()
    r = torch.where(valid, token_rewards, 0.0)
    v = torch.where(valid, values.to(token_rewards.dtype), 0.0)
    adv = torch.zeros_like(r)
    next_value = torch.zeros_like(r[:, 0])
    running = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):
        delta = r[:, t] + gamma * next_value - v[:, t]
        running = delta + gamma * lam * running
        adv[:, t] = running
        next_value = v[:, t]
    adv = torch.where(valid, adv, 0.0)
    return adv, torch.where(valid, adv + v, 0.0)


def compute_advantages(
    estimator: str,
    *,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    group_size: int = 1,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    lam: float = 1.0,
    values: torch.Tensor | None = None,
    greedy_rewards: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns of one rollout batch (the module docstring's four stages).

    REINFORCE++ (paper eq. 8-10): A_t = G_t = R - beta * sum_{i >= t} KL_i, then
    A_norm = (A - mean(A)) / std(A) over every valid token of the global batch.
    ``kl`` should be detached (KL in the reward); leave it None when KL is a loss term instead.

    Args:
        estimator: one of ``ESTIMATORS``.
        rewards: [B] scalar sequence rewards, groups of ``group_size`` contiguous.
        mask: [B, T] 1 on response tokens.
        kl: [B, T] per-token KL estimate, or None.
        values: [B, T] critic values (``gae`` only).
        greedy_rewards: [B] reward of the greedy response to each sample's prompt (``remax`` only).
    Returns:
        (advantages [B, T], returns [B, T]) in float32 (float64 for float64 rewards); 0 on padding.
        Returns are the un-whitened G_t (or GAE's A + V, the critic targets).
    """
    if rewards.dim() != 1 or mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"expected rewards [B] and mask [B, T], got {tuple(rewards.shape)} and {tuple(mask.shape)}"
        )
    if estimator == "gae" and (values is None or values.shape != mask.shape):
        got = None if values is None else tuple(values.shape)
        raise ValueError(f"gae needs critic values of shape {tuple(mask.shape)}, got {got}")

    scores = shape_rewards(estimator, rewards, group_size, greedy_rewards)  # [B]
    rewards_t = token_rewards(scores, mask, kl, kl_coef)  # [B, T]
    if estimator == "gae":
        advantages, returns = gae(rewards_t, values, mask, gamma, lam)
    else:
        returns = discounted_returns(rewards_t, mask, gamma)
        advantages = returns
    if estimator in WHITENED_ESTIMATORS:
        advantages = masked_whiten(advantages, mask)
    return advantages, returns
