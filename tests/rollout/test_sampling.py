"""The logits functions of reinforcepp.rollout.sampling: by hand, against HF's warpers, and statistically."""

import math

import pytest
import torch

from reinforcepp.rollout.sampling import (
    apply_temperature,
    greedy_tokens,
    sample_from_logits,
    sample_next,
    token_logprobs,
    top_k_filter,
    top_p_filter,
)

NEG_INF = float("-inf")


def kept(x: torch.Tensor) -> list[list[int]]:
    return [torch.isfinite(row).nonzero().squeeze(1).tolist() for row in x]


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson statistic over the categories with expected count >= 5 (the rest lumped together)."""
    total = counts.sum()
    expected = probs * total
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    nonzero = exp > 0
    stat = ((obs[nonzero] - exp[nonzero]) ** 2 / exp[nonzero]).sum().item()
    return stat, int(nonzero.sum()) - 1


def chi_square_bound(dof: int) -> float:
    """A generous upper quantile (about 1e-4 tail) of chi-square(dof), Wilson-Hilferty."""
    z = 3.8
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def test_temperature():
    z = torch.tensor([[1.0, -2.0, 4.0]])
    assert apply_temperature(z, 1.0) is z
    torch.testing.assert_close(apply_temperature(z, 0.5), z * 2)
    with pytest.raises(ValueError):
        apply_temperature(z, 0.0)


def test_top_k_by_hand():
    z = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, -1.0, 5.0, 4.0]])
    assert kept(top_k_filter(z, 2)) == [[1, 2], [2, 3]]
    assert kept(top_k_filter(z, 1)) == [[1], [2]]
    assert top_k_filter(z, 0) is z and top_k_filter(z, 4) is z and top_k_filter(z, 9) is z
    # ties with the k-th value are kept (as HF)
    assert kept(top_k_filter(torch.tensor([[2.0, 2.0, 0.0, 2.0]]), 2)) == [[0, 1, 3]]
    out = top_k_filter(z, 2)
    assert out[0, 1] == 3.0 and out[0, 0] == NEG_INF


def test_top_p_by_hand():
    # probabilities 0.5, 0.3, 0.15, 0.05 in a shuffled order
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    z = probs.log()
    assert kept(top_p_filter(z, 0.1)) == [[1]]  # the top token alone already has mass >= p
    assert kept(top_p_filter(z, 0.7)) == [[1, 3]]  # 0.5 < 0.7 <= 0.8
    assert kept(top_p_filter(z, 0.85)) == [[0, 1, 3]]  # 0.8 < 0.85 <= 0.95
    assert kept(top_p_filter(z, 0.99)) == [[0, 1, 2, 3]]
    assert kept(top_p_filter(z, 0.0)) == [[1]]  # always at least one token
    assert top_p_filter(z, 1.0) is z
    # rows are independent; kept logits are unchanged
    z2 = torch.tensor([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]).log()
    out = top_p_filter(z2, 0.65)
    assert kept(out) == [[2], [0, 1]]
    assert out[1, 0] == z2[1, 0]


def test_top_p_after_top_k_renormalises():
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    z = top_k_filter(probs.log(), 2)  # renormalised: 4/7, 3/7
    assert kept(top_p_filter(z, 0.5)) == [[0]]
    assert kept(top_p_filter(z, 0.6)) == [[0, 1]]


@pytest.mark.parametrize("candidates", [1, 3, 256])
def test_filters_match_hf_warpers(candidates):
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 50, generator=g) * 2
    for k in (1, 5, 17):
        torch.testing.assert_close(top_k_filter(z, k), TopKLogitsWarper(k)(None, z))
    for p in (0.05, 0.3, 0.9, 0.999):
        ours = top_p_filter(z, p, candidates=candidates)
        torch.testing.assert_close(ours, TopPLogitsWarper(p)(None, z))
        # composed with top-k, in HF's order
        zk = TopKLogitsWarper(10)(None, z)
        torch.testing.assert_close(top_p_filter(top_k_filter(z, 10), p, candidates=candidates), TopPLogitsWarper(p)(None, zk))


def test_greedy_and_logprobs():
    z = torch.tensor([[0.0, 2.0, 1.0], [3.0, -1.0, 0.5]])
    assert greedy_tokens(z).tolist() == [1, 0]
    toks = torch.tensor([2, 1])
    torch.testing.assert_close(token_logprobs(z, toks), torch.log_softmax(z, -1)[[0, 1], [2, 1]])


def test_sample_never_draws_filtered_tokens():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2000, 30, generator=g)
    zf = top_k_filter(z, 3)
    tok = sample_from_logits(zf, g)
    assert torch.isfinite(zf.gather(1, tok[:, None])).all()
    assert tok.dtype == torch.int64 and tok.shape == (2000,)


def test_sample_from_logits_distribution():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, 20, generator=g) * 1.5
    z[0, 3] = NEG_INF
    draws = sample_from_logits(z.expand(200_000, -1), g)
    counts = torch.bincount(draws, minlength=20).double()
    assert counts[3] == 0
    stat, dof = chi_square(counts, torch.softmax(z[0].double(), -1))
    assert stat < chi_square_bound(dof), (stat, dof)


def test_sample_next_logprobs_are_untruncated_and_tempered():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(500, 40, generator=g) * 2
    T = 0.7
    tok, lp = sample_next(z, temperature=T, top_k=8, top_p=0.8, generator=g)
    ref = torch.log_softmax(z / T, -1).gather(1, tok[:, None]).squeeze(1)
    torch.testing.assert_close(lp, ref, atol=1e-5, rtol=0)
    # every token drawn survives temperature -> top-k -> top-p
    zf = top_p_filter(top_k_filter(z / T, 8), 0.8)
    assert torch.isfinite(zf.gather(1, tok[:, None])).all()
    # unfiltered path, too
    tok, lp = sample_next(z, temperature=1.3, generator=g)
    torch.testing.assert_close(lp, torch.log_softmax(z / 1.3, -1).gather(1, tok[:, None]).squeeze(1), atol=1e-5, rtol=0)


def test_sample_next_greedy_uses_temperature_one():
    z = torch.tensor([[0.0, 2.0, 1.0]])
    tok, lp = sample_next(z, temperature=0.3, greedy=True)
    assert tok.tolist() == [1]
    torch.testing.assert_close(lp, torch.log_softmax(z, -1)[:, 1])


def test_sample_next_top_k_one_is_greedy():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(300, 25, generator=g)
    tok, _ = sample_next(z, temperature=0.5, top_k=1, generator=g)
    assert torch.equal(tok, z.argmax(-1))


def test_sample_next_reproducible():
    z = torch.randn(64, 100, generator=torch.Generator().manual_seed(5))
    a = sample_next(z, temperature=0.9, top_p=0.95, generator=torch.Generator().manual_seed(7))
    b = sample_next(z, temperature=0.9, top_p=0.95, generator=torch.Generator().manual_seed(7))
    c = sample_next(z, temperature=0.9, top_p=0.95, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("T,top_k,top_p", [(1.0, 0, 1.0), (0.6, 0, 1.0), (1.4, 6, 1.0), (0.8, 0, 0.7)])
def test_sample_next_distribution(T, top_k, top_p):
    g = torch.Generator().manual_seed(6)
    z = torch.randn(1, 24, generator=g) * 1.5
    tok, _ = sample_next(z.expand(100_000, -1), temperature=T, top_k=top_k, top_p=top_p, generator=g)
    target = torch.softmax(top_p_filter(top_k_filter(z[0:1] / T, top_k), top_p)[0].double(), -1)
    counts = torch.bincount(tok, minlength=24).double()
    assert counts[target == 0].sum() == 0
    stat, dof = chi_square(counts, target)
    assert stat < chi_square_bound(dof), (stat, dof)


def test_sample_next_banned_ids_are_removed_before_top_k_but_logprobs_are_untruncated():
    g = torch.Generator().manual_seed(9)
    z = torch.randn(2000, 12, generator=g)
    z[:, 3] = 4.0  # the most likely id: banned, it must never be drawn
    banned = torch.tensor([3, 7])
    tok, lp = sample_next(z, temperature=0.8, top_k=2, banned=banned, generator=g)
    assert not torch.isin(tok, banned).any()
    # top-k runs on the ids left: the two best of the other ten, never the third best
    allowed = (z / 0.8).index_fill(-1, banned, float("-inf"))
    assert torch.isfinite(top_k_filter(allowed, 2).gather(1, tok[:, None])).all()
    assert (tok != allowed.argmax(-1)).any()  # the second best left is drawn too (banning after top-k would not)
    torch.testing.assert_close(lp, torch.log_softmax(z / 0.8, -1).gather(1, tok[:, None]).squeeze(1), atol=1e-5, rtol=0)
    greedy, glp = sample_next(z, greedy=True, banned=banned)
    assert torch.equal(greedy, allowed.argmax(-1))
    torch.testing.assert_close(glp, torch.log_softmax(z, -1).gather(1, greedy[:, None]).squeeze(1))
