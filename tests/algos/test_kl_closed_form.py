"""KL estimators against exact values on a small vocabulary with known distributions.

pi = softmax(theta) and pi_ref are distributions over V = 6 tokens, so every expectation under pi is an
exact finite sum. What the tests establish (derivations in the docstrings):

- values:    E_pi[k1] = E_pi[k3] = KL(pi || ref) exactly; E_pi[k2] != KL (biased), and k3 has lower
             variance than k1 when pi is close to ref;
- gradients, on-policy, as a loss term (tokens sampled from pi, gradient through log pi only):
             E[grad k1] = 0                         (k1 as a loss does nothing)
             E[grad k2] = grad KL(pi || ref)        (unbiased: the paper's appendix claim holds)
             E[grad k3] = grad KL(ref || pi)        (the *forward* KL: biased for the reverse KL)
- k1 as a detached reward in the score-function estimator gives exactly grad KL(pi || ref), which is
  why REINFORCE++ puts k1 in the reward (paper eq. 8-9).
"""

import pytest
import torch

from reinforcepp.algos import kl_estimate, kl_loss

V = 6
THETA = torch.tensor([0.3, -0.2, 1.0, 0.0, -1.5, 0.4], dtype=torch.float64)
REF_LOGITS = torch.tensor([0.0, 0.1, 0.8, -0.3, -1.0, 0.9], dtype=torch.float64)
REF_LOGP = torch.log_softmax(REF_LOGITS, dim=0)
N_SAMPLES = 400_000


def policy(theta=THETA):
    theta = theta.clone().requires_grad_(True)
    return theta, torch.log_softmax(theta, dim=0)


def exact_reverse_kl(logp):
    return (logp.exp() * (logp - REF_LOGP)).sum()


def exact_forward_kl(logp):
    return (REF_LOGP.exp() * (REF_LOGP - logp)).sum()


def test_estimator_values_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.5, -1.0, -0.5]])  # d = (0.5, -1.0, 0.0)
    torch.testing.assert_close(kl_estimate(logp, ref, "k1"), torch.tensor([[0.5, -1.0, 0.0]]))
    torch.testing.assert_close(kl_estimate(logp, ref, "k2"), torch.tensor([[0.125, 0.5, 0.0]]))
    # k3 = exp(-d) - 1 + d: exp(-0.5) - 0.5 = 0.1065307, exp(1) - 2 = 0.7182818
    torch.testing.assert_close(kl_estimate(logp, ref, "k3"), torch.tensor([[0.1065307, 0.7182818, 0.0]]))
    torch.testing.assert_close(kl_estimate(logp, ref, "k1", clamp=0.8), torch.tensor([[0.5, -0.8, 0.0]]))
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'"):
        kl_estimate(logp, ref, "k4")


def test_exact_expectations_of_the_values():
    _, logp = policy()
    p = logp.exp().detach()
    kl = exact_reverse_kl(logp).detach()
    mean = {k: (p * kl_estimate(logp.detach(), REF_LOGP, k)).sum() for k in ("k1", "k2", "k3")}
    torch.testing.assert_close(mean["k1"], kl)
    torch.testing.assert_close(mean["k3"], kl)
    # k2's value is biased: here E[k2] = 0.0556 against KL = 0.0575 (3% low)
    assert abs(mean["k2"] - kl) > 0.02 * kl
    assert torch.all(kl_estimate(logp.detach(), REF_LOGP, "k3") >= 0)


def test_sampled_means_converge_to_the_exact_kl():
    _, logp = policy()
    p = logp.exp().detach()
    kl = exact_reverse_kl(logp).item()
    tokens = torch.multinomial(p, N_SAMPLES, replacement=True, generator=torch.Generator().manual_seed(0))
    for k in ("k1", "k3"):
        samples = kl_estimate(logp.detach()[tokens], REF_LOGP[tokens], k)
        stderr = samples.std().item() / N_SAMPLES**0.5
        assert abs(samples.mean().item() - kl) < 5 * stderr, k
    k2 = kl_estimate(logp.detach()[tokens], REF_LOGP[tokens], "k2")
    assert abs(k2.mean().item() - kl) > 5 * k2.std().item() / N_SAMPLES**0.5


def test_k3_has_lower_variance_than_k1_near_the_reference():
    _, logp = policy(REF_LOGITS + 0.1 * THETA)  # pi close to ref
    p = logp.exp().detach()
    var = {}
    for k in ("k1", "k3"):
        est = kl_estimate(logp.detach(), REF_LOGP, k)
        var[k] = (p * est**2).sum() - (p * est).sum() ** 2
    assert var["k3"] < 0.1 * var["k1"]


def expected_loss_gradient(estimator):
    """E_{o ~ pi}[grad_theta k(log pi_theta(o) - log ref(o))], exact: the sum over the vocabulary,
    weighting each token by its (detached) sampling probability."""
    theta, logp = policy()
    loss = (logp.exp().detach() * kl_estimate(logp, REF_LOGP, estimator)).sum()
    (grad,) = torch.autograd.grad(loss, theta)
    return grad


def grad_of(fn):
    theta, logp = policy()
    (grad,) = torch.autograd.grad(fn(logp), theta)
    return grad


def test_k1_loss_has_zero_expected_gradient():
    torch.testing.assert_close(expected_loss_gradient("k1"), torch.zeros(V, dtype=torch.float64))


def test_k2_loss_gradient_is_the_exact_reverse_kl_gradient():
    torch.testing.assert_close(expected_loss_gradient("k2"), grad_of(exact_reverse_kl))


def test_k3_loss_gradient_is_the_forward_kl_gradient_not_the_reverse():
    g3 = expected_loss_gradient("k3")
    torch.testing.assert_close(g3, grad_of(exact_forward_kl))
    assert (g3 - grad_of(exact_reverse_kl)).abs().max() > 1e-2  # biased for KL(pi || ref)


def test_k1_in_the_reward_gives_the_exact_reverse_kl_gradient():
    # Score-function estimator with the detached k1 as the (negated) reward: E[k1 * grad log pi].
    theta, logp = policy()
    k1 = kl_estimate(logp.detach(), REF_LOGP, "k1")
    surrogate = (logp.exp().detach() * k1 * logp).sum()
    (grad,) = torch.autograd.grad(surrogate, theta)
    torch.testing.assert_close(grad, grad_of(exact_reverse_kl))


@pytest.mark.parametrize("estimator,target", [("k2", exact_reverse_kl), ("k3", exact_forward_kl)])
def test_sampled_kl_loss_gradient_matches_its_expectation(estimator, target):
    # kl_loss on sampled tokens (token-mean) is a Monte Carlo estimate of the exact expected gradient.
    theta, logp = policy()
    tokens = torch.multinomial(logp.exp().detach(), N_SAMPLES, replacement=True, generator=torch.Generator().manual_seed(1))
    loss = kl_loss(logp[tokens][None], REF_LOGP[tokens][None], torch.ones(1, N_SAMPLES), estimator)
    (grad,) = torch.autograd.grad(loss, theta)
    torch.testing.assert_close(grad, grad_of(target), atol=5e-3, rtol=0)


# A sampler other than pi (pi_old, a step behind): the unbiased form must hold off-policy too, with w = pi / q < 10.
SAMPLER_LOGP = torch.log_softmax(torch.tensor([0.1, 0.2, 0.5, 0.0, -1.0, 0.3], dtype=torch.float64), dim=0)


@pytest.mark.parametrize("sampler", ["on-policy", "off-policy"])
@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_unbiased_kl_loss_gradient_is_the_exact_reverse_kl_gradient(estimator, sampler):
    """OpenRLHF's unbiased_gradient: E_{o ~ q}[grad l(o)] with l's gradient w d grad log pi, w = pi / q, is
    sum_o pi(o) d(o) grad log pi(o) = grad KL(pi || ref) exactly, for every estimator and q = pi or q != pi."""
    theta, logp = policy()
    q_logp = logp.detach() if sampler == "on-policy" else SAMPLER_LOGP
    assert (logp.detach() - q_logp).exp().max() < 10  # the weight's cap is not reached
    expected = sum(
        q_logp[o].exp() * kl_loss(logp[o].view(1, 1), REF_LOGP[o].view(1, 1), torch.ones(1, 1), estimator,
                                  unbiased_old_logp=q_logp[o].view(1, 1))
        for o in range(V)
    )
    (grad,) = torch.autograd.grad(expected, theta)
    torch.testing.assert_close(grad, grad_of(exact_reverse_kl), rtol=1e-12, atol=1e-15)
