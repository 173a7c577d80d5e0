"""The update phase: the micro-batch size never changes the gradient of an optimizer step."""

import copy

import pytest
import torch

from reinforcepp.config import load_config
from reinforcepp.testing import random_experience as make_random_experience
from reinforcepp.testing import tiny_model
from reinforcepp.train.forward import policy_logprobs
from reinforcepp.train.update import Optimization, shuffled_orders, update_actor

B, LP, T, V = 8, 5, 7, 48


def random_experience(seed=0):
    # uneven prompt and response lengths, so token counts differ per micro-batch
    return make_random_experience(B, LP, T, V, seed)


def one_sgd_step(model, exp, cfg):
    """Parameter change of one optimizer step with SGD(lr=1): minus the accumulated gradient."""
    model = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    orders = shuffled_orders(cfg, exp.response_ids.shape[0], torch.Generator().manual_seed(0))
    update_actor(Optimization(model, optimizer, scheduler, None), exp, cfg, orders)
    return [b - p.detach() for b, p in zip(before, model.parameters())]


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batch_size_does_not_change_the_gradient(agg):
    model = tiny_model(V)
    exp = random_experience()
    with torch.no_grad():
        logp, _ = policy_logprobs(model, exp, 1.0)
    exp.old_logp = logp.detach() + 0.05 * torch.randn(B, T) * exp.response_mask  # ratios != 1: clipping active
    overrides = ["rollout.batch_size=8", "train.batch_size=8", f"algo.loss.agg={agg}", "algo.kl.placement=loss",
                 "algo.kl.estimator=k3", "algo.kl.coef=0.1", "algo.loss.entropy_coef=0.01"]
    whole = one_sgd_step(model, exp, load_config(None, [*overrides, "train.micro_batch_size=8"]))
    for micro in (1, 2, 4):
        split = one_sgd_step(model, exp, load_config(None, [*overrides, f"train.micro_batch_size={micro}"]))
        for a, b in zip(whole, split):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert max(d.abs().max() for d in whole) > 0  # the step did something


@pytest.mark.parametrize("micro", [8, 2])
def test_single_pass_takes_old_logp_from_its_own_forward(micro):
    """One epoch of one mini-batch: log pi_old from the update's forward gives the step (and the old
    log-probs) that a separate no-grad forward gives."""
    model = tiny_model(V)
    overrides = ["rollout.batch_size=8", "train.batch_size=8", f"train.micro_batch_size={micro}",
                 "algo.kl.placement=loss", "algo.kl.estimator=k3", "algo.kl.coef=0.1"]
    cfg = load_config(None, overrides)
    separate = random_experience()
    with torch.no_grad():
        separate.old_logp = policy_logprobs(model, separate, 1.0)[0] * separate.response_mask
    reused = random_experience()
    expected, got = one_sgd_step(model, separate, cfg), one_sgd_step(model, reused, cfg)
    torch.testing.assert_close(reused.old_logp, separate.old_logp, rtol=0, atol=1e-6)
    assert (reused.old_logp[reused.response_mask == 0] == 0).all()
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert max(d.abs().max() for d in got) > 0


def test_old_logp_is_required_when_the_policy_moves_during_the_update():
    model = tiny_model(V)
    for overrides in (["train.batch_size=4"], ["train.batch_size=8", "train.epochs=2"]):
        cfg = load_config(None, ["rollout.batch_size=8", "train.micro_batch_size=4", *overrides])
        with pytest.raises(ValueError, match="exp.old_logp is needed"):
            one_sgd_step(model, random_experience(), cfg)


def test_chunked_logprobs_give_the_same_step():
    model = tiny_model(V)
    exp = random_experience(7)
    exp.old_logp = exp.ref_logp + 0.05 * torch.randn(B, T) * exp.response_mask
    overrides = ["rollout.batch_size=8", "train.batch_size=8", "train.micro_batch_size=4", "algo.kl.placement=loss",
                 "algo.kl.estimator=k3", "algo.kl.coef=0.1", "algo.loss.entropy_coef=0.01"]
    plain = one_sgd_step(model, exp, load_config(None, overrides))
    chunked = one_sgd_step(model, exp, load_config(None, [*overrides, "train.chunked_logprobs=true"]))
    for a, b in zip(plain, chunked):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert max(d.abs().max() for d in plain) > 0
