"""The actor objective and its options against gradients and values computed by hand.

Numbers marked "research note" are those of /work/shared/research/algorithms_options.md (sections d-f),
re-derived in the comments. float64 throughout: every claim is an identity up to rounding.
"""

import math

import pytest
import torch

from reinforcepp.algos import ObjectiveSettings, actor_objective, importance_ratio, kl_loss, tis_weights

F64 = torch.float64


def leaf(values):
    return torch.tensor([values], dtype=F64, requires_grad=True)


def const(values):
    return torch.tensor([values], dtype=F64)


# The 3-token example: log pi, log pi_old, log pi_ref, advantages, token entropies.
LOGP = [-1.0, -2.0, -0.5]
OLD = [-1.1, -2.0, -0.7]  # ratios r = [e^0.1, 1, e^0.2] = [1.105171, 1, 1.221403]
REF = [-1.2, -1.5, -0.5]  # d = logp - ref = [0.2, -0.5, 0]
ADV = [1.0, -0.5, 2.0]
ENT = [0.9, 1.3, 0.4]
MASK = torch.ones(1, 3)


def test_every_term_on_three_tokens_by_hand():
    """L = 1/3 sum_t [-min(r A, clip(r) A)] + 0.1 * 1/3 sum_t k3 - 0.01 * 1/3 sum_t H (token-mean, N = 3)."""
    settings = ObjectiveSettings(kl_coef=0.1, kl_estimator="k3", entropy_coef=0.01)
    logp, entropy = leaf(LOGP), leaf(ENT)
    loss, terms, _ = actor_objective(logp, const(OLD), const(ADV), MASK, settings, entropy=entropy, ref_logp=const(REF))
    loss.backward()
    r1, r3 = math.exp(0.1), math.exp(0.2)
    # surrogate: token 1 unclipped (-A r), token 2 r = 1 (-A = 0.5), token 3 r > 1.2 with A > 0: clipped, -1.2 A
    pg = (-r1 + 0.5 - 1.2 * 2.0) / 3
    k3 = [math.exp(-0.2) - 1 + 0.2, math.exp(0.5) - 1 - 0.5, 0.0]
    expected_loss = pg + 0.1 * sum(k3) / 3 - 0.01 * sum(ENT) / 3
    torch.testing.assert_close(loss, torch.tensor(expected_loss, dtype=F64))
    torch.testing.assert_close(terms["pg_loss"], torch.tensor(pg, dtype=F64))
    torch.testing.assert_close(terms["kl_loss"], torch.tensor(sum(k3) / 3, dtype=F64))
    # dL/dlogp_t = (-A_t r_t [unclipped] + 0.1 (1 - e^-d_t)) / 3;  dL/dH_t = -0.01 / 3
    d_pg = [-r1, 0.5, 0.0]  # token 3's clipped branch is constant in logp
    d_k3 = [1 - math.exp(-0.2), 1 - math.exp(0.5), 0.0]
    expected_grad = [(g + 0.1 * k) / 3 for g, k in zip(d_pg, d_k3)]
    torch.testing.assert_close(logp.grad, const(expected_grad))  # [-0.362348, 0.145043, 0]
    torch.testing.assert_close(entropy.grad, const([-0.01 / 3] * 3))
    assert expected_loss == pytest.approx(-1.004809, abs=1e-6)


def test_every_option_on_three_tokens_by_hand():
    """The same with the TIS weight (C = 2, log(pi_old / pi_rollout) = [0.1, -0.2, 1.0]: w = [e^0.1, e^-0.2, 2])
    on the surrogate and the unbiased KL gradient (weight pi / pi_old = r: gradient r d, value still k3)."""
    settings = ObjectiveSettings(kl_coef=0.1, kl_estimator="k3", kl_unbiased=True, entropy_coef=0.01, tis_cap=2.0)
    logp, entropy = leaf(LOGP), leaf(ENT)
    rollout = const(OLD) - const([0.1, -0.2, 1.0])
    loss, terms, _ = actor_objective(logp, const(OLD), const(ADV), MASK, settings, entropy=entropy,
                                     ref_logp=const(REF), rollout_logp=rollout)
    loss.backward()
    r1, w = math.exp(0.1), [math.exp(0.1), math.exp(-0.2), 2.0]
    pg = (-w[0] * r1 + w[1] * 0.5 - w[2] * 1.2 * 2.0) / 3
    k3 = [math.exp(-0.2) - 1 + 0.2, math.exp(0.5) - 1 - 0.5, 0.0]
    torch.testing.assert_close(loss, torch.tensor(pg + 0.1 * sum(k3) / 3 - 0.01 * sum(ENT) / 3, dtype=F64))
    d_pg = [-w[0] * r1, w[1] * 0.5, 0.0]
    d_kl = [r1 * 0.2, 1.0 * -0.5, 0.0]
    torch.testing.assert_close(logp.grad, const([(g + 0.1 * k) / 3 for g, k in zip(d_pg, d_kl)]))
    torch.testing.assert_close(entropy.grad, const([-0.01 / 3] * 3))


def test_terms_that_are_off_contribute_nothing():
    logp = leaf(LOGP)
    loss, terms, _ = actor_objective(logp, const(OLD), const(ADV), MASK, ObjectiveSettings())
    assert set(terms) == {"pg_loss"}
    torch.testing.assert_close(loss, terms["pg_loss"])
    with pytest.raises(ValueError, match="needs ref_logp"):
        actor_objective(logp, const(OLD), const(ADV), MASK, ObjectiveSettings(kl_coef=0.1))
    with pytest.raises(ValueError, match="needs entropy"):
        actor_objective(logp, const(OLD), const(ADV), MASK, ObjectiveSettings(entropy_coef=0.1))
    with pytest.raises(ValueError, match="needs rollout_logp"):
        actor_objective(logp, const(OLD), const(ADV), MASK, ObjectiveSettings(tis_cap=2.0))


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_unbiased_kl_gradient_per_token(estimator):
    """Research note (d): w = min(e^(logp - old), 10) = [e^0.1, 1, e^0.2]; gradient w d = [0.221034, -0.5, 0] for
    every estimator (here / 3, token-mean); the value stays the estimator's."""
    logp = leaf(LOGP)
    loss = kl_loss(logp, const(REF), MASK, estimator, unbiased_old_logp=const(OLD))
    loss.backward()
    torch.testing.assert_close(logp.grad, const([math.exp(0.1) * 0.2 / 3, -0.5 / 3, 0.0]))
    torch.testing.assert_close(loss, kl_loss(const(LOGP), const(REF), MASK, estimator))


def test_unbiased_kl_weight_is_capped_at_10():
    logp = leaf([0.0])
    kl_loss(logp, const([-1.0]), torch.ones(1, 1), "k2", unbiased_old_logp=const([-5.0])).backward()
    torch.testing.assert_close(logp.grad, const([10.0 * 1.0]))  # e^5 > 10: w = 10, d = 1


def test_tis_weights_by_hand():
    """Research note (f): log(pi_old / pi_rollout) = [0.1, -0.2, 1.0, -0.8], C = 2."""
    gap = const([0.1, -0.2, 1.0, -0.8])
    old = const([-1.0, -2.0, -0.5, -1.5])
    w = tis_weights(old, old - gap, 2.0)
    torch.testing.assert_close(w, const([math.exp(0.1), math.exp(-0.2), 2.0, math.exp(-0.8)]))
    # on-policy (logp = old: r = 1), A = 1, token-mean: the loss is -mean(w) = -1.093308 (uncorrected -1)
    logp = leaf(old.tolist()[0])
    loss, _, stats = actor_objective(logp, old, torch.ones(1, 4, dtype=F64), torch.ones(1, 4),
                                     ObjectiveSettings(tis_cap=2.0), rollout_logp=old - gap)
    torch.testing.assert_close(loss, -w.mean())
    assert float(loss.detach()) == pytest.approx(-1.093308, abs=1e-6)
    loss.backward()
    torch.testing.assert_close(logp.grad, -w / 4)  # the weight is detached: d(-w r)/dlogp = -w r, r = 1
    torch.testing.assert_close(stats["rollout_abs_log_ratio"], torch.tensor(2.1 / 4, dtype=F64))
    torch.testing.assert_close(stats["tis_capped_frac"], torch.tensor(0.25))


def test_rollout_mismatch_is_reported_without_a_cap():
    old = const(OLD)
    _, _, stats = actor_objective(leaf(LOGP), old, const(ADV), MASK, ObjectiveSettings(), rollout_logp=old + 0.3)
    torch.testing.assert_close(stats["rollout_abs_log_ratio"], torch.tensor(0.3, dtype=F64))
    assert "tis_capped_frac" not in stats


GSPO = ObjectiveSettings(ratio_level="sequence", clip_low=3e-4, clip_high=4e-4, agg="seq-mean-token-mean")


def test_gspo_clips_whole_sequences():
    """Research note (e), Test 1: sequence A log-ratios [0.02, -0.01, 0.05], A = +1: s_A = e^(0.06/3) = 1.020201 >
    1.0004, clipped (no gradient); sequence B [0.001, -0.0005], A = -1: s_B = e^0.00025, inside the range.
    loss = (-1.0004 + s_B) / 2; each of B's tokens gets s_B / (2 sequences * 2 tokens)."""
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, 0.0]], dtype=F64)
    log_ratio = old.new_tensor([[0.02, -0.01, 0.05], [0.001, -0.0005, 0.0]])
    logp = (old + log_ratio).requires_grad_(True)
    adv = old.new_tensor([[1.0] * 3, [-1.0] * 3])
    loss, _, stats = actor_objective(logp, old, adv, mask, GSPO)
    s_b = math.exp(0.0005 / 2)
    torch.testing.assert_close(loss, torch.tensor((-1.0004 + s_b) / 2, dtype=F64))
    assert float(loss.detach()) == pytest.approx(-0.000075, abs=1e-6)
    loss.backward()
    torch.testing.assert_close(logp.grad, old.new_tensor([[0.0, 0.0, 0.0], [s_b / 4, s_b / 4, 0.0]]))
    assert float(stats["clip_frac"]) == pytest.approx(3 / 5)  # all of A's tokens, none of B's
    # the token-level ratio with the same narrow clip would clip token by token instead
    token_loss, _, _ = actor_objective(old + log_ratio, old, adv, mask, ObjectiveSettings(
        clip_low=3e-4, clip_high=4e-4, agg="seq-mean-token-mean"))
    assert abs(float(token_loss.detach()) - float(loss.detach())) > 1e-4


def test_gspo_token_keeps_per_token_advantages():
    """Research note (e), Test 2: log-ratios [1e-4, -1e-4, 2e-4], s = e^(2e-4/3); A_t = [0.9, 0.5, -0.2].
    Loss -s (0.9 + 0.5 - 0.2) / 3 = -0.400027; GSPO-token's gradient is -A_t s / 3 (GSPO with the mean inside the
    exp would give every token -(sum A) s / 9 = -0.133342)."""
    old = const([-1.0, -2.0, -0.5])
    logp = (old + const([1e-4, -1e-4, 2e-4])).requires_grad_(True)
    adv = const([0.9, 0.5, -0.2])
    loss, _, _ = actor_objective(logp, old, adv, MASK, ObjectiveSettings(ratio_level="sequence",
                                                                           agg="seq-mean-token-mean"))
    s = math.exp(2e-4 / 3)
    torch.testing.assert_close(loss, torch.tensor(-s * 1.2 / 3, dtype=F64))
    loss.backward()
    torch.testing.assert_close(logp.grad, -adv * s / 3)


def test_sequence_ratio_value_is_the_geometric_mean_of_token_ratios():
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    log_ratio = torch.tensor([[0.3, -0.1, 5.0], [2.0, 2.0, 2.0]], dtype=F64)
    ratio = importance_ratio(log_ratio, torch.zeros_like(log_ratio), mask, "sequence")
    torch.testing.assert_close(ratio[0], torch.full((3,), math.sqrt(math.exp(0.3) * math.exp(-0.1)), dtype=F64))
    torch.testing.assert_close(ratio[1], torch.ones(3, dtype=F64))  # an empty row: ratio 1
    with pytest.raises(ValueError, match="unknown ratio level 'batch'"):
        importance_ratio(log_ratio, log_ratio, mask, "batch")
