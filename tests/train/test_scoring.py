"""Samples a reward function skips (None -> NaN) leave the update without moving the others' baselines."""

import math

import torch

from reinforcepp.train.scoring import drop_unscored


def test_skipped_samples_are_masked_and_filled_with_their_group_mean():
    nan = math.nan
    rewards = torch.tensor([1.0, nan, 0.0, 2.0, nan, nan])  # groups of 3: (1, -, 0), (2, -, -)
    mask = torch.ones(6, 4, dtype=torch.long)
    filled, new_mask = drop_unscored(rewards, mask, 3)
    torch.testing.assert_close(filled, torch.tensor([1.0, 0.5, 0.0, 2.0, 2.0, 2.0]))
    assert new_mask.sum(dim=1).tolist() == [4, 0, 4, 4, 0, 0]
    # group means of the scored samples are unchanged
    assert filled.view(2, 3).mean(dim=1).tolist() == [0.5, 2.0]


def test_nothing_changes_when_every_sample_is_scored():
    rewards, mask = torch.tensor([1.0, 0.0]), torch.ones(2, 3, dtype=torch.long)
    filled, new_mask = drop_unscored(rewards, mask, 2)
    assert filled is rewards and new_mask is mask
