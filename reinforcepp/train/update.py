"""The update phase: shuffled mini-batches, micro-batches, epochs; one optimizer step per mini-batch.

Each optimizer step's loss is normalized by the step's *global* token and sequence counts, passed to
every micro-batch, so the accumulated gradient is exactly the mini-batch's gradient whatever the
micro-batch size (tests/train/test_update.py).

Data parallel (torchrun): every rank holds the whole step's experience (gathered after the experience
passes), draws the same shuffled mini-batches, and computes the rows of its own equal share of each; the
gradients of the shares add up to the mini-batch's gradient, so the step does not depend on the number of
ranks (tests/train/test_distributed.py).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from reinforcepp.algos import ObjectiveSettings, actor_objective, masked_mean, value_loss
from reinforcepp.config import Config

from . import dist
from .experience import Experience
from .forward import checkpointing, critic_values, policy_logprobs
from .numerics import SkipCount, nonfinite_names
from .optim import clip_gradients, step_and_zero

log = logging.getLogger(__name__)
# train.target_kl stops the update at 1.5 x target_kl, as Stable-Baselines3 and OpenAI Spinning Up do
TARGET_KL_FACTOR = 1.5


@dataclass
class Optimization:
    """A model with its optimizer and LR schedule."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    max_grad_norm: float | None
    skips: SkipCount = field(default_factory=SkipCount)


def shuffled_orders(cfg: Config, num_sequences: int, generator: torch.Generator) -> list[torch.Tensor]:
    """The row order of each of the update's train.epochs passes. Drawn before the experience, so that its
    forward passes can take the rows in the first pass's micro-batches: the same shapes, the same numbers."""
    return [torch.randperm(num_sequences, generator=generator) for _ in range(cfg.train.epochs)]


def optimizer_steps(cfg: Config, orders: list[torch.Tensor]) -> Iterator[torch.Tensor]:
    """Row indices of each optimizer step: each pass's order in mini-batches of train.batch_size."""
    for order in orders:
        yield from order.split(cfg.train.batch_size)


def rank_micro_batches(mini_batch: torch.Tensor, micro_batch_size: int) -> Iterator[torch.Tensor]:
    """This rank's micro-batches of a mini-batch's rows: its equal share (all of it in one process), split."""
    yield from mini_batch[list(dist.shard_range(len(mini_batch)))].split(micro_batch_size)


def _backward(opt: Optimization, micro_losses: Callable[[Experience], torch.Tensor], exp: Experience,
              rows: torch.Tensor, cfg: Config) -> float:
    """Accumulate gradients over micro-batches of this rank's share of ``rows``; returns this rank's share of
    the mini-batch's loss."""
    # FSDP averages the ranks' gradients; the sum is the mini-batch's gradient, so scale by the world size
    scale = dist.world_size()
    total = 0.0
    with checkpointing(opt.model, cfg.train.gradient_checkpointing):
        for micro in rank_micro_batches(rows, cfg.train.micro_batch_size):
            loss = micro_losses(exp.rows(micro), micro)
            total += float(loss.detach())
            (loss * scale).backward()
    return total


def _step(opt: Optimization, loss: float, cfg: Config, where: str) -> tuple[torch.Tensor, bool]:
    """Clip and step, unless the loss or the gradient norm is non-finite on any rank: then the step is skipped
    (gradients zeroed; weights, optimizer and schedule untouched) and counted. Returns (the grad norm of the
    whole mini-batch's gradient, whether the step was skipped)."""
    norm = clip_gradients(opt.model, opt.max_grad_norm)
    bad = nonfinite_names({"loss": loss, "grad_norm": float(norm)})
    if dist.all_ok(not bad):  # one decision for every rank: a NaN on one skips on all
        step_and_zero(opt.optimizer, opt.scheduler)
        opt.skips.record_ok()
        return norm, False
    opt.optimizer.zero_grad(set_to_none=True)
    names = list(dict.fromkeys(name for rank_bad in dist.gather_objects(bad) for name in rank_bad))
    opt.skips.record_skip(where, names, cfg.train.max_skipped_steps)
    return norm, True


def _where(step: int | None, role: str, index: int) -> str:
    return f"{'' if step is None else f'step {step}, '}{role} mini-batch {index}"


class _Meter:
    """Token- or step-weighted averages of scalar statistics."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.weights: dict[str, float] = defaultdict(float)

    def add(self, name: str, value: torch.Tensor | float, weight: float = 1.0) -> None:
        self.sums[name] += float(value) * weight
        self.weights[name] += weight

    def means(self) -> dict[str, float]:
        """The averages over every rank's additions (each rank adds for its own rows)."""
        names = sorted(self.sums)
        totals = dist.global_sum(torch.tensor([[self.sums[k], self.weights[k]] for k in names], dtype=torch.float64))
        return {k: float(s / w) for k, (s, w) in zip(names, totals.tolist()) if w > 0}

    def add_share(self, name: str, value: torch.Tensor | float) -> None:
        """This rank's share of a per-step total (a mini-batch's loss: the sum of the ranks' shares)."""
        self.sums[name] += float(value)
        self.weights[name] += 1.0 if dist.is_main() else 0.0

    def add_whole(self, name: str, value: torch.Tensor | float) -> None:
        """A per-step value every rank already holds whole (the grad norm): counted once."""
        self.add(name, value, 1.0 if dist.is_main() else 0.0)


def single_pass(cfg: Config, num_sequences: int) -> bool:
    """True when the update is one optimizer step over the whole batch (one epoch, one mini-batch): its
    forward runs the policy that sampled, so log pi_old is that forward's detached log-probs."""
    return cfg.train.epochs == 1 and num_sequences <= cfg.train.batch_size


def update_actor(opt: Optimization, exp: Experience, cfg: Config, orders: list[torch.Tensor], *,
                 step: int | None = None, kl_coef: float | None = None) -> dict[str, float]:
    """PPO-clip updates of the policy over the experience (paper eq. 1, plus the KL/entropy loss terms), its
    rows taken in ``orders`` (:func:`shuffled_orders`).

    Models stay in eval mode: dropout is off in RL, so the updated policy is the one that sampled.
    With ``exp.old_logp`` None (allowed only for a :func:`single_pass` update) log pi_old is taken from the
    update's own forward, detached, and written to ``exp.old_logp``: one forward pass fewer per step.
    With train.target_kl set, the update stops early (:func:`_kl_stop`). ``step``: the RL step, for messages.
    ``kl_coef``: the KL loss weight of this step (the run's KL controller); None = algo.kl.coef.
    """
    old_from_forward = exp.old_logp is None
    if old_from_forward:
        if not single_pass(cfg, exp.response_ids.shape[0]):
            raise ValueError("update_actor: exp.old_logp is needed unless the update is one epoch of one mini-batch")
        exp.old_logp = torch.zeros(exp.response_mask.shape, dtype=torch.float32)
    settings = objective_settings(cfg, kl_coef)
    meter = _Meter()
    skipped, stopped_at = 0, 0
    for index, rows in enumerate(optimizer_steps(cfg, orders), start=1):
        kl_k3 = torch.zeros(2, dtype=torch.float64)  # this rank's sum of k3 over tokens, and its tokens
        # rows: the whole mini-batch, every rank's share: the step's global normalizers
        num_tokens, num_seqs = exp.response_mask[rows].sum().float(), torch.tensor(float(len(rows)))
        step_loss = defaultdict(float)  # summed over micro-batches: the mini-batch's loss terms

        def micro_losses(mb: Experience, micro: torch.Tensor) -> torch.Tensor:
            logp, entropy = policy_logprobs(
                opt.model, mb, cfg.rollout.temperature, with_entropy=True, chunked=cfg.train.chunked_logprobs,
                autocast=cfg.train.autocast, shared_prefix=cfg.train.shared_prefix,
            )
            device = logp.device
            mask = mb.response_mask.to(device)
            if old_from_forward:  # the policy has not moved yet: pi_old is this forward
                old = logp.detach()
                exp.old_logp[micro, : old.shape[1]] = old.float().cpu() * mb.response_mask
            else:
                old = mb.old_logp.to(device)
            loss, terms, stats = actor_objective(
                logp, old, mb.advantages.to(device), mask, settings, entropy=entropy,
                ref_logp=None if mb.ref_logp is None else mb.ref_logp.to(device),
                rollout_logp=None if mb.rollout_logp is None else mb.rollout_logp.to(device),
                num_tokens=num_tokens, num_seqs=num_seqs,
            )
            for name, value in terms.items():
                step_loss[f"actor/{name}"] += float(value)
            tokens = float(mask.sum())
            for name, value in stats.items():
                meter.add(f"actor/{name}", value, tokens)
            kl_k3.add_(torch.tensor([float(stats["approx_kl_k3"]) * tokens, tokens], dtype=torch.float64))
            meter.add("actor/entropy", masked_mean(entropy.detach(), mask), tokens)
            return loss

        loss = _backward(opt, micro_losses, exp, rows, cfg)
        for name, value in step_loss.items():
            meter.add_share(name, value)
        if _kl_stop(cfg, kl_k3, index, step):
            opt.optimizer.zero_grad(set_to_none=True)
            stopped_at = index
            break
        grad_norm, was_skipped = _step(opt, loss, cfg, _where(step, "actor", index))
        meter.add_whole("actor/grad_norm", grad_norm)
        skipped += was_skipped
    if old_from_forward:  # each rank filled the rows of its share (zeros elsewhere)
        exp.old_logp = dist.global_sum(exp.old_logp)
    return {**meter.means(), "actor/lr": opt.scheduler.get_last_lr()[0], **_skip_metrics("actor", opt, skipped),
            **({"actor/kl_stop_minibatch": float(stopped_at)} if cfg.train.target_kl is not None else {})}


def objective_settings(cfg: Config, kl_coef: float | None = None) -> ObjectiveSettings:
    """The actor objective's terms as the config sets them (the KL loss term only where
    :attr:`KLConfig.applied_to` puts the KL in the loss); ``kl_coef``: this step's KL weight when the adaptive
    controller sets it (None = algo.kl.coef)."""
    loss, kl = cfg.algo.loss, cfg.algo.kl
    kl_coef = kl.coef if kl_coef is None else kl_coef
    return ObjectiveSettings(
        clip_low=loss.clip_low, clip_high=loss.clip_high, dual_clip=loss.dual_clip, ratio_level=loss.ratio_level,
        tis_cap=loss.tis_cap, kl_coef=kl_coef if kl.applied_to == "loss" else 0.0, kl_estimator=kl.estimator,
        kl_clamp=kl.clamp, kl_unbiased=kl.unbiased_gradient, entropy_coef=loss.entropy_coef, agg=loss.agg,
        token_norm=loss.token_norm or cfg.rollout.max_new_tokens,
    )


def _kl_stop(cfg: Config, kl_k3: torch.Tensor, index: int, step: int | None) -> bool:
    """train.target_kl: whether the mini-batch's approx KL (k3, token mean over every rank's rows) passed
    1.5 x target_kl, so that its step and the rest of the update are skipped (logged)."""
    target = cfg.train.target_kl
    if target is None:
        return False
    total, tokens = dist.global_sum(kl_k3).tolist()
    approx_kl = total / max(tokens, 1.0)
    if approx_kl <= TARGET_KL_FACTOR * target:
        return False
    if dist.is_main():
        log.warning("%s: approx KL %.3g > %g x train.target_kl = %.3g: the update stops here (this mini-batch and "
                    "the rest are not applied)", _where(step, "actor", index), approx_kl, TARGET_KL_FACTOR,
                    TARGET_KL_FACTOR * target)
    return True


def _skip_metrics(role: str, opt: Optimization, skipped: int) -> dict[str, float]:
    """Optimizer steps skipped for a non-finite loss or grad norm: in this update, and in this process."""
    return {f"{role}/skipped_steps": float(skipped), f"{role}/skipped_steps_total": float(opt.skips.total)}


def update_critic(opt: Optimization, exp: Experience, cfg: Config, orders: list[torch.Tensor], *,
                  step: int | None = None) -> dict[str, float]:
    """Clipped value-loss regression of the critic onto the returns (PPO's critic), rows taken in ``orders``."""
    meter = _Meter()
    skipped = 0
    for index, rows in enumerate(optimizer_steps(cfg, orders), start=1):
        num_tokens = exp.response_mask[rows].sum().float()
        step_loss = defaultdict(float)

        def micro_losses(mb: Experience, micro: torch.Tensor) -> torch.Tensor:
            values = critic_values(opt.model, mb, autocast=cfg.train.autocast)
            device = values.device
            mask = mb.response_mask.to(device)
            loss, stats = value_loss(
                values, mb.values.to(device), mb.returns.to(device), mask,
                clip=cfg.critic.value_clip, num_tokens=num_tokens,
            )
            step_loss["critic/value_loss"] += float(loss.detach())
            meter.add("critic/value_clip_frac", stats["value_clip_frac"], float(mask.sum()))
            return loss

        loss = _backward(opt, micro_losses, exp, rows, cfg)
        grad_norm, was_skipped = _step(opt, loss, cfg, _where(step, "critic", index))
        meter.add_whole("critic/grad_norm", grad_norm)
        meter.add_share("critic/value_loss", step_loss["critic/value_loss"])
        skipped += was_skipped
    return {**meter.means(), "critic/lr": opt.scheduler.get_last_lr()[0], **_skip_metrics("critic", opt, skipped)}
