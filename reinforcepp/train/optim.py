"""AdamW and its learning-rate schedule: linear warmup, then constant, linear or cosine decay to a floor."""

from __future__ import annotations

import math

import torch

from reinforcepp.config.schema import OptimConfig


def lr_factor(step: int, total: int, cfg: OptimConfig) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based) of ``total``."""
    warmup = int(cfg.warmup_ratio * total)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if cfg.scheduler == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if cfg.scheduler == "linear":
        decay = 1.0 - progress
    else:  # cosine
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * decay


def clip_and_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    max_grad_norm: float | None,
) -> torch.Tensor:
    """Clip the gradient norm (when set), step the optimizer and the schedule, zero the grads.

    Returns the norm before clipping (detached).
    """
    norm = clip_gradients(model, max_grad_norm)
    step_and_zero(optimizer, scheduler)
    return norm


def clip_gradients(model: torch.nn.Module, max_grad_norm: float | None) -> torch.Tensor:
    """Clip the trainable parameters' gradient norm (when set); returns the norm before clipping (detached)."""
    params = [p for p in model.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm is not None else float("inf"))
    return norm.detach()


def step_and_zero(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def build_optimizer(
    model: torch.nn.Module, cfg: OptimConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    params = [p for p in model.parameters() if p.requires_grad]
    # the fused kernel: the same update to float rounding, ~10x faster than foreach on CPU at 135M parameters
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    optimizer = torch.optim.AdamW(
        params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused or None
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, cfg))
    return optimizer, scheduler
