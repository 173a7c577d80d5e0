"""Numerical faults of a run: skipped optimizer steps, the float32 range, and drift warnings.

A non-finite loss or gradient norm skips its optimizer step (the update counts it here); too many in a row
stop the run with a :class:`NumericError`. Values that leave float32's range are errors, never a silent inf.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from reinforcepp.algos.dtypes import FLOAT32_MAX, beyond_float32
from reinforcepp.config import Config

from . import dist
from .finite import first_nonfinite

log = logging.getLogger(__name__)


class NumericError(RuntimeError):
    """The run cannot go on: its numbers stopped being finite. The message names the step and the quantity."""


def nonfinite_names(values: dict[str, float]) -> list[str]:
    """The names of the values that are NaN or +-inf."""
    return [name for name, value in values.items() if not math.isfinite(value)]


def to_float32(values: torch.Tensor, what: str) -> torch.Tensor:
    """``values`` in float32; a value out of float32's range is an error naming ``what`` and the value."""
    over = beyond_float32(values)
    if bool(over.any()):
        largest = float(values.double()[over].abs().max())
        raise NumericError(f"{what}: {largest:.3g} is beyond float32's range (+-{FLOAT32_MAX:.3g})")
    return values.float()


def check_weights(models: dict[str, torch.nn.Module | None], step: int) -> None:
    """After an update: an error when a weight overflowed to inf/NaN (finite gradients times a huge learning
    rate can do it), before the next rollout samples from it. Each rank checks its shards; all raise."""
    parts = {name: model for name, model in models.items() if model is not None}
    problems = [p for p in dist.gather_objects(first_nonfinite(parts)) if p is not None]
    if problems:
        raise NumericError(f"step {step}: after the optimizer step, {problems[0]} (the learning rate is too high?); "
                           "the run stopped; the checkpoints written stay intact")


@dataclass
class SkipCount:
    """Optimizer steps skipped for a non-finite loss or gradient norm: in a row, and in this process."""

    consecutive: int = 0
    total: int = 0

    def record_ok(self) -> None:
        self.consecutive = 0

    def record_skip(self, where: str, what: list[str], limit: int) -> None:
        """Count a skipped optimizer step at ``where`` (e.g. "step 3, actor mini-batch 2") whose ``what`` (loss,
        grad_norm) was non-finite; raises NumericError at ``limit`` skips in a row."""
        self.consecutive += 1
        self.total += 1
        quantities = " and ".join(what)
        if self.consecutive >= limit:
            raise NumericError(
                f"{where}: non-finite {quantities}; {limit} optimizer steps in a row skipped (train.max_skipped_steps "
                f"= {limit}): the run stopped; the checkpoints written stay intact (lower the learning rate, or the "
                "reward's scale)"
            )
        if dist.is_main():
            log.warning("%s: non-finite %s; optimizer step skipped (%d in a row, %d in all)", where, quantities,
                        self.consecutive, self.total)


@dataclass
class DriftWarnings:
    """Warn once per run when the KL to the reference exceeds train.warn_kl_above, once when the policy's
    entropy falls below train.warn_entropy_below (each with the step and the value)."""

    warned: set[str] = field(default_factory=set)

    def check(self, cfg: Config, step: int, metrics: dict[str, float]) -> list[str]:
        """The warnings this step raises for the first time (also logged on rank 0)."""
        t = cfg.train
        found = []
        kl, entropy = metrics.get("kl"), metrics.get("actor/entropy")
        if t.warn_kl_above is not None and kl is not None and not kl <= t.warn_kl_above:
            found.append(("kl", f"step {step}: KL to the reference is {kl:.3g} per token, above train.warn_kl_above "
                                f"= {t.warn_kl_above:g}: the policy is diverging (learning rate too high?)"))
        if t.warn_entropy_below is not None and entropy is not None and not entropy >= t.warn_entropy_below:
            found.append(("entropy", f"step {step}: policy entropy is {entropy:.3g} per token, below "
                                     f"train.warn_entropy_below = {t.warn_entropy_below:g}: it has collapsed (its "
                                     "samples no longer differ)"))
        new = [message for key, message in found if key not in self.warned]
        self.warned.update(key for key, _ in found)
        if dist.is_main():
            for message in new:
                log.warning("%s", message)
        return new
