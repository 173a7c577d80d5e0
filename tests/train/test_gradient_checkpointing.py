"""train.gradient_checkpointing: each decoder layer is recomputed in the backward, and the step is unchanged."""

import copy

import torch

from reinforcepp.config import load_config
from reinforcepp.testing import random_experience, tiny_model
from reinforcepp.train.forward import checkpointing, policy_logprobs
from reinforcepp.train.run import enable_gradient_checkpointing
from reinforcepp.train.update import Optimization, shuffled_orders, update_actor

B, LP, T, V = 8, 5, 7, 48


def sgd_step(model, exp, cfg):
    """The parameter change of one SGD(lr=1) step: minus the accumulated gradient."""
    model = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    orders = shuffled_orders(cfg, B, torch.Generator().manual_seed(0))
    update_actor(Optimization(model, optimizer, scheduler, None), exp, cfg, orders)
    return [b - p.detach() for b, p in zip(before, model.parameters())]


def bytes_saved_for_backward(model, exp, enabled: bool) -> int:
    """What the forward keeps for the backward (the activation memory), outside the checkpointed layers."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with checkpointing(model, enabled), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        policy_logprobs(model, exp, 1.0, with_entropy=True)
    return sum(saved)


def test_checkpointing_recomputes_layers_and_keeps_the_gradient():
    # float64: recomputation repeats the same operations, so the two steps agree to rounding of ~1e-16
    model = tiny_model(V).double().eval()
    exp = random_experience(B, LP, T, V)
    with torch.no_grad():
        exp.old_logp = policy_logprobs(model, exp, 1.0)[0].detach() + 0.05 * torch.randn(B, T, dtype=torch.float64)
    exp.old_logp = exp.old_logp * exp.response_mask
    overrides = ["rollout.batch_size=8", "train.batch_size=8", "train.micro_batch_size=4", "algo.kl.placement=loss",
                 "algo.kl.estimator=k3", "algo.kl.coef=0.1", "algo.loss.entropy_coef=0.01"]
    plain = sgd_step(model, exp, load_config(None, overrides))
    enable_gradient_checkpointing(model)
    ckpt = sgd_step(model, exp, load_config(None, [*overrides, "train.gradient_checkpointing=true"]))
    kept, kept_checkpointed = bytes_saved_for_backward(model, exp, False), bytes_saved_for_backward(model, exp, True)
    assert kept_checkpointed < 0.6 * kept, (kept_checkpointed, kept)  # the layers' activations are not kept
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
    assert max(d.abs().max() for d in plain) > 0
    assert not any(m.training for m in model.modules())  # the layers' flags are restored: eval mode (no dropout)
