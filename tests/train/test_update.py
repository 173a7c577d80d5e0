"""The update phase: the micro-batch size never changes the gradient of an optimizer step.

Model and experience are float64: the claims are exact, and in float64 a different summation order
(another split, CPU, thread count or kernel) moves a step by ~1e-16, where float32 moved it by ~1e-7.
"""

import copy

import pytest
import torch

from reinforcepp.config import load_config
from reinforcepp.testing import random_experience as make_random_experience
from reinforcepp.testing import tiny_model
from reinforcepp.train import update
from reinforcepp.train.forward import policy_logprobs
from reinforcepp.train.update import Optimization, shuffled_orders, update_actor

B, LP, T, V = 8, 5, 7, 48
# Steps here are <= 0.35 and differ by <= 2.2e-16 between micro-batch splits (measured on 3 CPU code paths):
# 1e-12 leaves 4,000x headroom, and a per-micro-batch normalizer still fails it (the control below).
STEP_ATOL = 1e-12


def float64_model():
    return tiny_model(V).double()


def random_experience(seed=0):
    # uneven prompt and response lengths, so token counts differ per micro-batch
    exp = make_random_experience(B, LP, T, V, seed)
    exp.advantages, exp.ref_logp = exp.advantages.double(), exp.ref_logp.double()
    return exp


def noisy_old_logp(logp, exp):
    """log pi_old a little off log pi: ratios != 1, so clipping is active."""
    return logp.detach() + 0.05 * torch.randn(B, T, dtype=torch.float64) * exp.response_mask


def one_sgd_step(model, exp, cfg):
    """before - after of one optimizer step with SGD(lr=1): the accumulated gradient."""
    model = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    orders = shuffled_orders(cfg, exp.response_ids.shape[0], torch.Generator().manual_seed(0))
    update_actor(Optimization(model, optimizer, scheduler, None), exp, cfg, orders)
    return [b - p.detach() for b, p in zip(before, model.parameters())]


def assert_same_step(a, b):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=STEP_ATOL)


OBJECTIVE = ["algo.kl.placement=loss", "algo.kl.estimator=k3", "algo.kl.coef=0.1", "algo.loss.entropy_coef=0.01"]


def hand_written_step(model, exp, cfg):
    """The step the update must take, by the formula written out here and not by reinforcepp.algos: one
    forward over the whole batch, L = agg(-min(r A, clip(r, 0.8, 1.2) A)) + 0.1 agg(clamp(k3, 10)) - 0.01 agg(H),
    r = exp(logp - old_logp), k3 = exp(-d) - 1 + d with d = logp - ref_logp; :func:`one_sgd_step`'s change is grad L.
    So a flipped entropy sign, a dropped KL term or a wrong normalizer in the update fails the tests below,
    which comparing the update with itself (another micro-batch split) never would."""
    model = copy.deepcopy(model)
    logp, entropy = policy_logprobs(model, exp, 1.0, with_entropy=True)
    m = exp.response_mask.bool()
    A, old, ref = exp.advantages, exp.old_logp, exp.ref_logp
    r = torch.exp(logp - old)
    pg = -torch.minimum(r * A, r.clamp(0.8, 1.2) * A)
    d = logp - ref
    k3 = (torch.exp(-d) - 1 + d).clamp(max=10.0)
    per_token = torch.where(m, pg + 0.1 * k3 - 0.01 * entropy, 0.0)
    lengths = m.sum(dim=1).double()
    loss = {
        "token-mean": per_token.sum() / lengths.sum(),
        "seq-mean-token-mean": (per_token.sum(dim=1) / lengths).mean(),
        "seq-mean-token-sum-norm": per_token.sum() / (B * cfg.rollout.max_new_tokens),
    }[cfg.algo.loss.agg]
    return list(torch.autograd.grad(loss, list(model.parameters())))


def micro_batch_steps(agg, micro_sizes=(1, 2, 4)):
    """The step by hand, then the update's step of the whole batch, then with each micro-batch size."""
    model = float64_model()
    exp = random_experience()
    with torch.no_grad():
        exp.old_logp = noisy_old_logp(policy_logprobs(model, exp, 1.0)[0], exp)
    overrides = ["rollout.batch_size=8", "train.batch_size=8", f"algo.loss.agg={agg}", *OBJECTIVE]
    configs = [load_config(None, [*overrides, f"train.micro_batch_size={micro}"]) for micro in (8, *micro_sizes)]
    return [hand_written_step(model, exp, configs[0]), *(one_sgd_step(model, exp, cfg) for cfg in configs)]


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batch_size_does_not_change_the_gradient(agg):
    by_hand, whole, *splits = micro_batch_steps(agg)
    assert_same_step(whole, by_hand)
    for split in splits:
        assert_same_step(whole, split)
    assert max(d.abs().max() for d in whole) > 0  # the step did something


def test_per_micro_batch_normalization_fails_the_invariance_check(monkeypatch):
    """The control: with each micro-batch dividing by its own token count (the bug the global normalizer
    prevents), the check above fails; without this it would prove nothing."""
    objective = update.actor_objective
    monkeypatch.setattr(update, "actor_objective",
                        lambda *args, **kwargs: objective(*args, **{**kwargs, "num_tokens": None, "num_seqs": None}))
    _, whole, split = micro_batch_steps("token-mean", micro_sizes=(2,))
    with pytest.raises(AssertionError):
        assert_same_step(whole, split)


@pytest.mark.parametrize("micro", [8, 2])
def test_single_pass_takes_old_logp_from_its_own_forward(micro):
    """One epoch of one mini-batch: log pi_old from the update's forward gives the step (and the old
    log-probs) that a separate no-grad forward gives."""
    model = float64_model()
    overrides = ["rollout.batch_size=8", "train.batch_size=8", f"train.micro_batch_size={micro}",
                 "algo.kl.placement=loss", "algo.kl.estimator=k3", "algo.kl.coef=0.1"]
    cfg = load_config(None, overrides)
    separate = random_experience()
    with torch.no_grad():
        separate.old_logp = policy_logprobs(model, separate, 1.0)[0] * separate.response_mask
    reused = random_experience()
    expected, got = one_sgd_step(model, separate, cfg), one_sgd_step(model, reused, cfg)
    # the update stores log pi_old in float32, as the loop's experience: both sides are float32 roundings of
    # float64 values ~1e-15 apart, so at most one ulp apart (< 1e-6 for |logp| < 16)
    torch.testing.assert_close(reused.old_logp, separate.old_logp.float(), rtol=0, atol=1e-6)
    assert (reused.old_logp[reused.response_mask == 0] == 0).all()
    assert_same_step(expected, got)
    assert max(d.abs().max() for d in got) > 0


def test_old_logp_is_required_when_the_policy_moves_during_the_update():
    model = tiny_model(V)
    for overrides in (["train.batch_size=4"], ["train.batch_size=8", "train.epochs=2"]):
        cfg = load_config(None, ["rollout.batch_size=8", "train.micro_batch_size=4", *overrides])
        with pytest.raises(ValueError, match="exp.old_logp is needed"):
            one_sgd_step(model, random_experience(), cfg)


def test_chunked_logprobs_give_the_same_step():
    model = float64_model()
    exp = random_experience(7)
    exp.old_logp = noisy_old_logp(exp.ref_logp, exp)
    overrides = ["rollout.batch_size=8", "train.batch_size=8", "train.micro_batch_size=4", *OBJECTIVE]
    cfg = load_config(None, overrides)
    plain = one_sgd_step(model, exp, cfg)
    chunked = one_sgd_step(model, exp, load_config(None, [*overrides, "train.chunked_logprobs=true"]))
    assert_same_step(plain, hand_written_step(model, exp, cfg))
    assert_same_step(plain, chunked)
    assert max(d.abs().max() for d in plain) > 0
