"""Every estimator against tensors computed by hand.

The batch: P = 2 prompts x G = 2 samples, responses of lengths 3, 2, 4, 1 (right padded to T = 4).
Group 0 has rewards (1, 0); group 1 is a zero-variance group (2, 2). The per-token KL is 9 on padding,
so any leak of padding into a return shows up. beta = 0.5, gamma = 1:

    row 0: kl (0.1, 0.2, 0.3)        -> -beta*kl = (-0.05, -0.10, -0.15)
    row 1: kl (0.4, -0.2)            -> (-0.20, +0.10)
    row 2: kl (0.0, 0.1, 0.0, 0.1)   -> (0, -0.05, 0, -0.05)
    row 3: kl (0.5)                  -> (-0.25)
"""

import math

import pytest
import torch

from reinforcepp.algos import compute_advantages, discounted_returns, gae, shape_rewards

P = 9.0  # KL on padding: must never reach any output
REWARDS = torch.tensor([1.0, 0.0, 2.0, 2.0], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
KL = torch.tensor(
    [[0.1, 0.2, 0.3, P], [0.4, -0.2, P, P], [0.0, 0.1, 0.0, 0.1], [0.5, P, P, P]], dtype=torch.float64
)
BETA = 0.5


def rows(*values):
    """Right-pad each row's hand-computed values to T = 4 with zeros."""
    return torch.tensor([list(v) + [0.0] * (4 - len(v)) for v in values], dtype=torch.float64)


def whitened(returns, mean, var):
    """Hand-computed whitening: (G - mean) / sqrt(var) on valid tokens, 0 on padding."""
    return torch.where(MASK.bool(), (returns - mean) / math.sqrt(var), 0.0)


def run(estimator, **kwargs):
    return compute_advantages(
        estimator, rewards=REWARDS, mask=MASK, group_size=2, kl=KL, kl_coef=BETA, **kwargs
    )


def test_reinforce_pp_returns_and_global_whitening():
    # No baseline: R = (1, 0, 2, 2) on the last token.
    expected_returns = rows((0.70, 0.75, 0.85), (-0.10, 0.10), (1.90, 1.90, 1.95, 1.95), (1.75,))
    # 10 valid tokens: sum 11.75 -> mean 1.175; sum of squared deviations 5.87625 -> var 0.587625.
    adv, ret = run("reinforce_pp")
    torch.testing.assert_close(ret, expected_returns)
    torch.testing.assert_close(adv, whitened(expected_returns, 1.175, 0.587625))


def test_reinforce_pp_baseline_subtracts_group_mean_then_whitens_globally():
    # Group means 0.5 and 2.0 -> shaped R = (0.5, -0.5, 0, 0).
    expected_returns = rows((0.20, 0.25, 0.35), (-0.60, -0.40), (-0.10, -0.10, -0.05, -0.05), (-0.25,))
    # Sum -0.75 -> mean -0.075; squared deviations sum 0.77625 -> var 0.077625.
    adv, ret = run("reinforce_pp_baseline")
    torch.testing.assert_close(ret, expected_returns)
    # The zero-variance group still gets -mean/std after whitening (as in OpenRLHF): not zero.
    torch.testing.assert_close(adv, whitened(expected_returns, -0.075, 0.077625))


def test_grpo_divides_by_unbiased_group_std_and_zeroes_constant_groups():
    s = 0.5 / (math.sqrt(0.5) + 1e-6)  # unbiased std of (1, 0) is sqrt(0.5)
    expected = rows((s - 0.30, s - 0.25, s - 0.15), (-0.10 - s, 0.10 - s), (-0.10, -0.10, -0.05, -0.05), (-0.25,))
    adv, ret = run("grpo")
    torch.testing.assert_close(adv, expected)  # no whitening
    torch.testing.assert_close(ret, expected)


def test_dr_grpo_is_group_mean_without_std_or_whitening():
    expected = rows((0.20, 0.25, 0.35), (-0.60, -0.40), (-0.10, -0.10, -0.05, -0.05), (-0.25,))
    adv, ret = run("dr_grpo")
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected)


def test_rloo_subtracts_mean_of_the_others():
    # With G = 2 the other sample is the baseline: shaped R = (1, -1, 0, 0).
    expected = rows((0.70, 0.75, 0.85), (-1.10, -0.90), (-0.10, -0.10, -0.05, -0.05), (-0.25,))
    adv, _ = run("rloo")
    torch.testing.assert_close(adv, expected)
    # G = 3: (3, 0, 0) -> (3 - 0, 0 - 1.5, 0 - 1.5).
    shaped = shape_rewards("rloo", torch.tensor([3.0, 0.0, 0.0]), group_size=3)
    torch.testing.assert_close(shaped, torch.tensor([3.0, -1.5, -1.5]))


def test_remax_subtracts_greedy_reward():
    greedy = torch.tensor([0.5, 0.5, 2.5, 2.5], dtype=torch.float64)  # shaped R = (0.5, -0.5, -0.5, -0.5)
    expected = rows((0.20, 0.25, 0.35), (-0.60, -0.40), (-0.60, -0.60, -0.55, -0.55), (-0.75,))
    adv, _ = run("remax", greedy_rewards=greedy)
    torch.testing.assert_close(adv, expected)


def test_gae_by_hand():
    # One response of 3 tokens, reward 1 at the end, gamma 0.9, lambda 0.8, gamma*lambda = 0.72:
    # delta_2 = 1 - 0.4 = 0.6                  A_2 = 0.6
    # delta_1 = 0.9*0.4 - 0.2 = 0.16           A_1 = 0.16 + 0.72*0.6 = 0.592
    # delta_0 = 0.9*0.2 - 0.5 = -0.32          A_0 = -0.32 + 0.72*0.592 = 0.10624
    r = torch.tensor([[0.0, 0.0, 1.0, 7.0]], dtype=torch.float64)
    v = torch.tensor([[0.5, 0.2, 0.4, 7.0]], dtype=torch.float64)
    m = torch.tensor([[1, 1, 1, 0]])
    adv, ret = gae(r, v, m, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, torch.tensor([[0.10624, 0.592, 0.6, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(ret, torch.tensor([[0.60624, 0.792, 1.0, 0.0]], dtype=torch.float64))


def test_gae_estimator_whitens_advantages_but_not_returns():
    values = rows((0.5, 0.2, 0.4), (0.1, 0.3), (1.0, 1.0, 1.0, 1.0), (0.0,))
    adv, ret = compute_advantages(
        "gae", rewards=REWARDS, mask=MASK, kl=KL, kl_coef=BETA, values=values, gamma=1.0, lam=1.0
    )
    # gamma = lambda = 1: A_t = G_t - V_t, returns = G_t.
    reinforce_returns = rows((0.70, 0.75, 0.85), (-0.10, 0.10), (1.90, 1.90, 1.95, 1.95), (1.75,))
    raw = reinforce_returns - values
    torch.testing.assert_close(ret, reinforce_returns)
    valid = raw[MASK.bool()]
    mean, var = valid.mean().item(), valid.var(unbiased=False).item()
    torch.testing.assert_close(adv, whitened(raw, mean, var))


def test_discounted_returns_by_hand():
    # r = (1, 2, 4), gamma = 0.5: G_2 = 4, G_1 = 2 + 2 = 4, G_0 = 1 + 2 = 3.
    r = torch.tensor([[1.0, 2.0, 4.0, 5.0]], dtype=torch.float64)
    out = discounted_returns(r, torch.tensor([[1, 1, 1, 0]]), gamma=0.5)
    torch.testing.assert_close(out, torch.tensor([[3.0, 4.0, 4.0, 0.0]], dtype=torch.float64))


def test_grpo_constant_group_is_exactly_zero_even_with_float_residue():
    # mean(0.1, 0.1, 0.1) != 0.1 in floating point; a bare epsilon would amplify the residue.
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 0.0])
    shaped = shape_rewards("grpo", rewards, group_size=3)
    assert torch.equal(shaped[:3], torch.zeros(3))
    assert shaped[3] > 0 and shaped[4] < 0


@pytest.mark.parametrize("estimator", ["reinforce_pp_baseline", "grpo", "dr_grpo", "rloo"])
def test_group_estimators_refuse_group_size_one(estimator):
    with pytest.raises(ValueError, match="group_size >= 2"):
        compute_advantages(estimator, rewards=REWARDS, mask=MASK, group_size=1)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'"):
        compute_advantages("ppo", rewards=REWARDS, mask=MASK)
    with pytest.raises(ValueError, match="gae needs critic values"):
        compute_advantages("gae", rewards=REWARDS, mask=MASK)
    with pytest.raises(ValueError, match="remax needs greedy_rewards"):
        compute_advantages("remax", rewards=REWARDS, mask=MASK)
    with pytest.raises(ValueError, match="divisible by group_size=3"):
        compute_advantages("grpo", rewards=REWARDS, mask=MASK, group_size=3)
    with pytest.raises(ValueError, match="kl must have the shape of mask"):
        compute_advantages("reinforce_pp", rewards=REWARDS, mask=MASK, kl=KL[:, :3], kl_coef=0.1)
