"""pass@k against the binomial form and by hand."""

from math import comb

import pytest

from reinforcepp.eval import pass_at_k


def test_by_hand():
    # n = 4 samples, 1 passes: pass@1 = 1/4; pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 1/2; pass@4 = 1
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(4, 0, 3) == 0.0


@pytest.mark.parametrize("n", [1, 5, 20])
def test_matches_the_binomial_form(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            expected = 1.0 - comb(n - c, k) / comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="n=2, c=3, k=1"):
        pass_at_k(2, 3, 1)
    with pytest.raises(ValueError, match="k=3"):
        pass_at_k(2, 1, 3)
