"""Adaptive KL coefficient, DAPO's group filter, the truncation mask: against the numbers of
/work/shared/research/algorithms_options.md, each re-derived by hand in the comments."""

import pytest
import torch

from reinforcepp.algos import (
    adaptive_kl_coef,
    aggregate,
    compute_advantages,
    informative_groups,
    sequence_mean_kl,
    truncation_mask,
)


def test_adaptive_kl_coef_follows_three_batches_by_hand():
    # beta0 0.01, target 0.1, H 10000, n 256 (n / H = 0.0256)
    beta1 = adaptive_kl_coef(0.01, 0.15, 0.1, 10000, 256)  # e = clip(0.5) = 0.2: 0.01 * (1 + 0.00512)
    assert beta1 == pytest.approx(0.0100512, rel=1e-12)
    beta2 = adaptive_kl_coef(beta1, 0.05, 0.1, 10000, 256)  # e = clip(-0.5) = -0.2: * (1 - 0.00512)
    assert beta2 == pytest.approx(0.009999737856, rel=1e-12)
    beta3 = adaptive_kl_coef(beta2, 0.11, 0.1, 10000, 256)  # e = 0.1 (unclipped): * (1 + 0.00256)
    assert beta3 == pytest.approx(0.01002533718, rel=1e-9)
    assert adaptive_kl_coef(0.01, 0.1, 0.1, 10000, 256) == 0.01  # on target: unchanged


def test_the_controller_reads_the_mean_over_sequences_of_token_means():
    # k1 values [0.3, 0.1] and [0.2, 0.0, 0.1, 0.1]: sequence means 0.2 and 0.1 -> 0.15 (the token mean
    # would be 0.8 / 6 = 0.133333); a third, fully masked row does not count
    old = torch.tensor([[0.3, 0.1, 0.0, 0.0], [0.2, 0.0, 0.1, 0.1], [5.0, 5.0, 5.0, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    kl = sequence_mean_kl(old, torch.zeros_like(old), mask, "k1")
    assert float(kl) == pytest.approx(0.15, abs=1e-15)
    assert float(sequence_mean_kl(old, old, mask, "k3")) == 0.0


def test_dynamic_sampling_keeps_groups_whose_rewards_differ():
    # g1 [1,1,1,1], g2 [0,0,0,0], g3 [1,0,0,1], g4 [0.5 x 4], g5 [1,0,0,0]: the std rule keeps g3 and g5
    rewards = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1, 0.5, 0.5, 0.5, 0.5, 1, 0, 0, 0], dtype=torch.float64)
    assert informative_groups(rewards, 4).tolist() == [False, False, True, False, True]


def test_truncated_responses_leave_the_loss_and_its_normalizer_but_not_the_baseline():
    # G = 4, rewards [1, 0, 0, 1], lengths [3, 5, 2, 4], response 2 cut at max_new_tokens = 5
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    mask = (torch.arange(5)[None] < torch.tensor([3, 5, 2, 4])[:, None]).long()
    finished = torch.tensor([True, False, True, True])
    masked = truncation_mask(mask, finished)
    assert masked.sum(dim=1).tolist() == [3, 0, 2, 4]
    # a mean baseline (Dr.GRPO) still sees the truncated reward: A = [0.5, -0.5, -0.5, 0.5]
    advantages, _ = compute_advantages("dr_grpo", rewards=rewards, mask=masked, group_size=4)
    assert advantages[:, 0].tolist() == [0.5, 0.0, -0.5, 0.5]  # row 2 has no token left
    # on-policy per-token loss -A, token mean: (-1.5 + 1.0 - 2.0) / 9 tokens = -0.277778 (not / 14 = -0.178571)
    loss = aggregate(-advantages, masked)
    assert float(loss) == pytest.approx(-2.5 / 9, abs=1e-15)


def test_a_response_ending_in_eos_at_the_limit_stays():
    mask = torch.ones(2, 3, dtype=torch.long)
    assert truncation_mask(mask, torch.tensor([True, False])).tolist() == [[1, 1, 1], [0, 0, 0]]
