"""Masked statistics by hand."""

import math

import torch

from reinforcepp.algos import masked_mean, masked_sum, masked_var, masked_whiten

X = torch.tensor([[1.0, 2.0, float("nan")], [3.0, float("inf"), 100.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_sum_mean_var_by_hand_ignore_padding_even_nan():
    # valid: 1, 2, 3 -> sum 6, mean 2, population variance (1 + 0 + 1) / 3
    assert masked_sum(X, MASK).item() == 6.0
    assert masked_mean(X, MASK).item() == 2.0
    assert masked_var(X, MASK).item() == torch.tensor(2 / 3).item()
    torch.testing.assert_close(masked_mean(X, MASK, dim=1), torch.tensor([1.5, 3.0]))


def test_empty_mask_gives_zero_not_nan():
    assert masked_mean(X, torch.zeros_like(MASK)).item() == 0.0


def test_whiten_by_hand():
    out = masked_whiten(X, MASK)
    s = math.sqrt(2 / 3)
    torch.testing.assert_close(out, torch.tensor([[-1 / s, 0.0, 0.0], [1 / s, 0.0, 0.0]]))
    # without the mean shift only the std is divided out
    torch.testing.assert_close(masked_whiten(X, MASK, shift_mean=False)[0, :2], torch.tensor([1 / s, 2 / s]))


def test_whiten_of_a_constant_uses_the_variance_floor():
    # var = 0 -> std floor 1e-4: a constant batch whitens to exactly 0, never NaN
    out = masked_whiten(torch.full((2, 3), 5.0), torch.ones(2, 3))
    assert torch.equal(out, torch.zeros(2, 3))
