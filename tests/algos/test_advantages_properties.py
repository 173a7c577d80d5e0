"""Properties every estimator must have, on random batches."""

import pytest
import torch

from reinforcepp.algos import ESTIMATORS, WHITENED_ESTIMATORS, compute_advantages, shape_rewards, token_rewards


def random_batch(seed, P=4, G=4, T=12):
    g = torch.Generator().manual_seed(seed)
    B = P * G
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    return dict(
        rewards=torch.randint(0, 2, (B,), generator=g).double(),
        mask=mask,
        group_size=G,
        kl=torch.randn(B, T, generator=g, dtype=torch.float64) * 0.1,
        kl_coef=0.1,
        values=torch.randn(B, T, generator=g, dtype=torch.float64),
        greedy_rewards=torch.rand(P, generator=g, dtype=torch.float64).repeat_interleave(G),
    )


def poison_padding(batch):
    """Put NaN and huge values on padding: a correct estimator never reads them."""
    out = dict(batch)
    pad = ~batch["mask"].bool()
    out["kl"] = batch["kl"].masked_fill(pad, float("nan"))
    out["values"] = batch["values"].masked_fill(pad, 1e30)
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("estimator", sorted(WHITENED_ESTIMATORS))
def test_whitened_advantages_have_zero_mean_unit_variance_over_valid_tokens(estimator, seed):
    batch = random_batch(seed)
    adv, _ = compute_advantages(estimator, **batch)
    valid = adv[batch["mask"].bool()]
    torch.testing.assert_close(valid.mean(), torch.tensor(0.0, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(valid.var(unbiased=False), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_padding_never_leaks(estimator):
    batch = random_batch(7)
    clean = compute_advantages(estimator, **batch)
    poisoned = compute_advantages(estimator, **poison_padding(batch))
    pad = ~batch["mask"].bool()
    for a, b in zip(clean, poisoned):
        torch.testing.assert_close(a, b)
        assert torch.all(b[pad] == 0)


def test_gae_with_unit_gamma_lambda_and_zero_values_equals_reinforce_pp_returns():
    batch = random_batch(3)
    batch["values"] = torch.zeros_like(batch["values"])
    gae_adv, gae_ret = compute_advantages("gae", **batch, gamma=1.0, lam=1.0)
    rpp_adv, rpp_ret = compute_advantages("reinforce_pp", **batch)
    torch.testing.assert_close(gae_ret, rpp_ret)  # before whitening
    torch.testing.assert_close(gae_adv, rpp_adv)  # and after, since both whiten the same way


@pytest.mark.parametrize("estimator", ["reinforce_pp_baseline", "grpo", "dr_grpo", "rloo"])
def test_group_baselines_sum_to_zero_per_group(estimator):
    rewards = torch.randn(24, dtype=torch.float64)
    shaped = shape_rewards(estimator, rewards, group_size=6).view(4, 6)
    torch.testing.assert_close(shaped.sum(dim=1), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)


def test_rloo_is_group_mean_baseline_scaled_by_g_over_g_minus_1():
    # R_i - mean_{j != i} R_j = G / (G - 1) * (R_i - mean_g R): verl's formulation, derived by hand.
    rewards = torch.randn(20, dtype=torch.float64)
    rloo = shape_rewards("rloo", rewards, group_size=5)
    centred = shape_rewards("dr_grpo", rewards, group_size=5)
    torch.testing.assert_close(rloo, centred * 5 / 4)


def test_kl_enters_every_token_and_accumulates_backwards():
    # gamma = 1, reward 0: G_t = -beta * sum_{i >= t} kl_i, the REINFORCE++ token-level KL penalty.
    mask = torch.ones(1, 4, dtype=torch.long)
    kl = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    _, ret = compute_advantages("reinforce_pp", rewards=torch.zeros(1, dtype=torch.float64), mask=mask, kl=kl, kl_coef=0.1)
    torch.testing.assert_close(ret, torch.tensor([[-1.0, -0.9, -0.7, -0.4]], dtype=torch.float64))


def test_batch_whitening_is_global_not_per_prompt():
    # Two prompts with very different reward scales: per-prompt normalization would give both groups
    # the same spread; global normalization keeps the difference (OpenRLHF #830).
    rewards = torch.tensor([10.0, 12.0, 0.0, 0.2], dtype=torch.float64)
    mask = torch.ones(4, 3, dtype=torch.long)
    adv, _ = compute_advantages("reinforce_pp_baseline", rewards=rewards, mask=mask, group_size=2)
    assert adv[0, 0] < 0 < adv[1, 0]
    torch.testing.assert_close(adv[1, 0] / adv[3, 0], torch.tensor(10.0, dtype=torch.float64))


def test_token_rewards_put_the_score_on_the_last_valid_token_and_nothing_on_padding():
    mask = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 0, 0]])  # a hole, and an empty row
    kl = torch.tensor([[1.0, 2.0, float("nan")], [1.0, float("nan"), 3.0], [float("nan")] * 3])
    out = token_rewards(torch.tensor([10.0, 20.0, 30.0]), mask, kl, kl_coef=0.5)
    torch.testing.assert_close(out, torch.tensor([[-0.5, 9.0, 0.0], [-0.5, 0.0, 18.5], [0.0, 0.0, 0.0]]))
