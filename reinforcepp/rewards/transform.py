"""Reward normalization, clipping and scaling, applied to R before any baseline."""

from __future__ import annotations

import torch

from reinforcepp.algos.dtypes import FLOAT32_MAX, beyond_float32

from .function import RewardError


class RewardTransform:
    """R <- scale * clip((R - mean) / std, -c, c).

    ``normalize``: "none"; "fixed" (the given mean/std, e.g. a reward model's stored moments); or
    "running" (mean/std of every raw reward seen so far, merged with Chan's parallel formula so the
    result is exact whatever the batch sizes; the loop calls ``observe`` on each step's rewards
    before applying it). Its state is checkpointed.

    Computed in float64 (a reward near float32's limit times a scale must not overflow on the way); a result
    beyond float32's range is an error naming the setting, never an inf. The loop passes float64 rewards, so
    that the advantages' statistics are taken in float64 too.
    """

    def __init__(self, normalize: str = "none", mean: float = 0.0, std: float = 1.0,
                 clip: float | None = None, scale: float = 1.0) -> None:
        self.normalize, self.clip, self.scale = normalize, clip, scale
        self.mean, self.std = mean, std
        self.count, self.m2 = 0, 0.0  # running moments

    def update(self, rewards: torch.Tensor) -> None:
        """Fold a batch of raw rewards [B] into the running moments (call on the global batch)."""
        n = rewards.numel()
        batch_mean = rewards.double().mean().item()
        batch_m2 = ((rewards.double() - batch_mean) ** 2).sum().item()
        total = self.count + n
        delta = batch_mean - self.mean
        self.m2 += batch_m2 + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.count = total
        self.std = (self.m2 / total) ** 0.5

    def observe(self, rewards: torch.Tensor) -> None:
        """Fold the step's raw rewards into the running moments (normalize="running" only)."""
        if self.normalize == "running":
            self.update(rewards)

    def __call__(self, rewards: torch.Tensor) -> torch.Tensor:
        """R [B] -> the transformed R [B], in R's dtype (float64 for float64 R)."""
        dtype, rewards = rewards.dtype, rewards.double()
        if self.normalize in ("running", "fixed"):  # "model": the reward model already normalized
            rewards = (rewards - self.mean) / max(self.std, 1e-8)
        if self.clip is not None:
            rewards = rewards.clamp(-self.clip, self.clip)
        scaled = rewards * self.scale
        over = beyond_float32(scaled)
        if bool(over.any()):
            i = int(over.nonzero()[0])
            raise RewardError(
                f"reward.scale: {self.scale:g} x the reward {float(rewards[i]):.3g} of sample {i} is "
                f"{float(scaled[i]):.3g}, beyond float32's range (+-{FLOAT32_MAX:.3g}); lower reward.scale"
            )
        return scaled.to(dtype)

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "count": self.count, "m2": self.m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.std, self.count, self.m2 = state["mean"], state["std"], int(state["count"]), state["m2"]
