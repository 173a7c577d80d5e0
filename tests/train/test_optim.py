"""The learning-rate schedule by hand."""

import pytest

from reinforcepp.config.schema import ActorOptimConfig
from reinforcepp.train.optim import lr_factor


def test_warmup_then_cosine_to_the_floor():
    cfg = ActorOptimConfig(warmup_ratio=0.2, scheduler="cosine", min_lr_ratio=0.1)
    # total 10 steps: warmup 2 steps at 1/3, 2/3; cosine from 1 down to 0.1 over the other 8
    assert [lr_factor(s, 10, cfg) for s in (0, 1)] == pytest.approx([1 / 3, 2 / 3])
    assert lr_factor(2, 10, cfg) == pytest.approx(1.0)
    assert lr_factor(6, 10, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: cos(pi/2) = 0
    assert lr_factor(10, 10, cfg) == pytest.approx(0.1)


def test_linear_and_constant():
    linear = ActorOptimConfig(warmup_ratio=0.0, scheduler="linear", min_lr_ratio=0.0)
    assert [lr_factor(s, 4, linear) for s in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    constant = ActorOptimConfig(warmup_ratio=0.0, scheduler="constant")
    assert lr_factor(3, 4, constant) == 1.0


def test_the_fused_adamw_steps_like_the_reference_implementation():
    import torch

    from reinforcepp.train.optim import build_optimizer

    torch.manual_seed(0)
    model = torch.nn.Linear(16, 8)
    reference = torch.nn.Linear(16, 8)
    reference.load_state_dict(model.state_dict())
    start = model.weight.detach().clone()
    cfg = ActorOptimConfig(lr=1e-2, weight_decay=0.1, warmup_ratio=0.0, scheduler="constant")
    optimizer, _ = build_optimizer(model, cfg, total_steps=10)
    assert optimizer.defaults["fused"]
    plain = torch.optim.AdamW(reference.parameters(), lr=1e-2, betas=tuple(cfg.betas), eps=cfg.eps,
                              weight_decay=0.1, foreach=False)
    for step in range(5):
        x = torch.randn(4, 16)
        for net, opt in ((model, optimizer), (reference, plain)):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert (model.weight - start).abs().max() > 1e-2  # five steps of lr 1e-2 moved the weights
