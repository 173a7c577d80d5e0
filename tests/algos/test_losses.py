"""The PPO surrogate, value loss, entropy and log-probs against values computed by hand."""

import math

import pytest
import torch

from reinforcepp.algos import aggregate, entropy_from_logits, policy_loss, token_logprobs, value_loss

# Five tokens, one per clipping regime (eps = 0.2):
#   ratio 1.5, A = +1: min(1.5, 1.2)  = 1.2  -> loss -1.2   (clipped high)
#   ratio 1.5, A = -1: min(-1.5, -1.2) = -1.5 -> loss  1.5  (not clipped; dual clip c = 1.4 caps it at 1.4)
#   ratio 0.5, A = -1: min(-0.5, -0.8) = -0.8 -> loss  0.8  (clipped low)
#   ratio 0.5, A = +1: min(0.5, 0.8)  = 0.5  -> loss -0.5   (not clipped)
#   ratio 1.1, A = +2: inside the trust region             -> loss -2.2
RATIOS = torch.tensor([[1.5, 1.5, 0.5, 0.5, 1.1]], dtype=torch.float64)
ADV = torch.tensor([[1.0, -1.0, -1.0, 1.0, 2.0]], dtype=torch.float64)
OLD = torch.tensor([[-1.0, -2.0, -0.5, -3.0, -1.2]], dtype=torch.float64)
MASK = torch.ones(1, 5)


def logp_leaf():
    return (OLD + RATIOS.log()).clone().requires_grad_(True)


def per_token_loss(**kwargs):
    """Per-token losses via a one-hot mask each: token-mean of one token is that token's loss."""
    out = []
    for t in range(5):
        m = torch.zeros(1, 5)
        m[0, t] = 1
        loss, _ = policy_loss(logp_leaf(), OLD, ADV, m, **kwargs)
        out.append(loss.item())
    return out


def test_clipped_surrogate_by_hand():
    assert per_token_loss() == pytest.approx([-1.2, 1.5, 0.8, -0.5, -2.2])
    loss, stats = policy_loss(logp_leaf(), OLD, ADV, MASK)
    assert loss.item() == pytest.approx((-1.2 + 1.5 + 0.8 - 0.5 - 2.2) / 5)
    assert stats["clip_frac"].item() == pytest.approx(2 / 5)
    assert stats["clip_frac_high"].item() == pytest.approx(1 / 5)
    assert stats["clip_frac_low"].item() == pytest.approx(1 / 5)
    assert stats["dual_clip_frac"].item() == 0.0


def test_clip_higher_and_dual_clip():
    # clip_high 0.28 moves the first token's cap to 1.28; dual clip 1.4 caps the second at 1.4.
    assert per_token_loss(clip_high=0.28) == pytest.approx([-1.28, 1.5, 0.8, -0.5, -2.2])
    assert per_token_loss(dual_clip=1.4) == pytest.approx([-1.2, 1.4, 0.8, -0.5, -2.2])
    _, stats = policy_loss(logp_leaf(), OLD, ADV, MASK, dual_clip=1.4)
    assert stats["dual_clip_frac"].item() == pytest.approx(1 / 5)


def test_gradient_is_zero_where_clipped_and_minus_ratio_times_advantage_elsewhere():
    # d/dlogp of -rho * A is -rho * A; summed over tokens (num_tokens = 1 undoes the mean).
    logp = logp_leaf()
    loss, _ = policy_loss(logp, OLD, ADV, MASK, num_tokens=1)
    loss.backward()
    expected = torch.tensor([[0.0, 1.5, 0.0, -0.5, -2.2]], dtype=torch.float64)
    torch.testing.assert_close(logp.grad, expected)
    logp = logp_leaf()
    loss, _ = policy_loss(logp, OLD, ADV, MASK, num_tokens=1, dual_clip=1.4)
    loss.backward()
    assert logp.grad[0, 1] == 0.0  # the dual-clipped token is constant in logp


def test_on_policy_gradient_equals_reinforce():
    # ratio = 1 everywhere: grad of the surrogate is -A * grad log pi, the policy-gradient estimator.
    logp = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    adv = torch.randn(3, 4, dtype=torch.float64)
    loss, stats = policy_loss(logp, logp.detach(), adv, torch.ones(3, 4), num_tokens=1)
    loss.backward()
    torch.testing.assert_close(logp.grad, -adv)
    assert stats["clip_frac"].item() == 0.0 and stats["approx_kl"].item() == 0.0


def test_approx_kl_stats():
    loss, stats = policy_loss(logp_leaf(), OLD, ADV, MASK)
    d = -RATIOS.log()  # old_logp - logp
    assert stats["approx_kl"].item() == pytest.approx(d.mean().item())
    assert stats["approx_kl_k3"].item() == pytest.approx((torch.exp(-d) - 1 + d).mean().item())


def test_extreme_log_ratio_stays_finite():
    logp = torch.tensor([[50.0]], requires_grad=True)
    loss, _ = policy_loss(logp, torch.tensor([[-50.0]]), torch.tensor([[-1.0]]), torch.ones(1, 1))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()


def test_aggregations_by_hand():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate(loss, mask, "token-mean", num_tokens=8).item() == pytest.approx(10 / 8)
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(loss, mask, "seq-mean-token-mean", num_seqs=4).item() == pytest.approx(6 / 4)
    assert aggregate(loss, mask, "seq-mean-token-sum-norm").item() == pytest.approx(10 / (2 * 3))
    assert aggregate(loss, mask, "seq-mean-token-sum-norm", token_norm=10).item() == pytest.approx(10 / 20)
    with pytest.raises(ValueError, match="unknown loss aggregation 'mean'"):
        aggregate(loss, mask, "mean")


def test_empty_sequences_are_excluded_from_the_sequence_mean():
    loss = torch.tensor([[2.0, 4.0], [7.0, 7.0]])
    mask = torch.tensor([[1, 1], [0, 0]])
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx(3.0)


def test_value_loss_by_hand():
    # token 0: V 1.0, V_old 0.2, R 0: V_clip 0.7; max(1.0, 0.49)/2 = 0.5
    # token 1: V 0.3, V_old 1.0, R 1: V_clip 0.5; max(0.49, 0.25)/2 = 0.245
    # token 2: V 0.0, V_old 1.0, R -1: V_clip 0.5; max(1.0, 2.25)/2 = 1.125 (clipped term wins)
    values = torch.tensor([[1.0, 0.3, 0.0]], requires_grad=True)
    old = torch.tensor([[0.2, 1.0, 1.0]])
    returns = torch.tensor([[0.0, 1.0, -1.0]])
    loss, stats = value_loss(values, old, returns, torch.ones(1, 3), clip=0.5)
    assert loss.item() == pytest.approx((0.5 + 0.245 + 1.125) / 3)
    assert stats["value_clip_frac"].item() == pytest.approx(1 / 3)
    unclipped, _ = value_loss(values, old, returns, torch.ones(1, 3), clip=None)
    assert unclipped.item() == pytest.approx((0.5 + 0.245 + 0.5) / 3)


def test_entropy_closed_forms():
    p = torch.tensor([0.5, 0.25, 0.25])
    logits = torch.stack([p.log() + 3.0, torch.zeros(3)])[None]  # [1, 2, 3]; a shift changes nothing
    ent = entropy_from_logits(logits)
    torch.testing.assert_close(ent, torch.tensor([[1.5 * math.log(2), math.log(3)]]))


def test_token_logprobs_matches_log_softmax_at_temperature_and_leaves_logits_alone():
    logits = torch.randn(2, 3, 7)
    tokens = torch.randint(0, 7, (2, 3))
    before = logits.clone()
    out = token_logprobs(logits, tokens, temperature=0.7)
    expected = torch.log_softmax(logits / 0.7, dim=-1).gather(-1, tokens[..., None])[..., 0]
    torch.testing.assert_close(out, expected)
    assert torch.equal(logits, before)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        token_logprobs(logits, tokens, temperature=0.0)
