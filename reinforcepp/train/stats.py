"""Per-step metrics, named like the peers (verl, TRL, OpenRLHF) where they have a name."""

from __future__ import annotations

import torch

from reinforcepp.algos import kl_estimate, masked_mean, masked_var
from . import dist
from .experience import Experience


def _moments(prefix: str, x: torch.Tensor) -> dict[str, float]:
    x = x.double()
    x = x[torch.isfinite(x)]  # samples the reward function skipped are not scores
    if not len(x):
        return {}
    return {f"{prefix}/mean": x.mean().item(), f"{prefix}/std": x.std(unbiased=False).item()}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports ru_maxrss in KiB)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def model_state_mb(run) -> float:
    """MiB of trained weights and optimizer states this rank holds (its shards under FSDP2), and gradients if any
    (the update frees them after each optimizer step)."""
    def local_bytes(t: torch.Tensor) -> int:
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()

    total = 0
    for opt in (run.actor, run.critic):
        if opt is None:
            continue
        for p in opt.model.parameters():
            total += local_bytes(p) + (local_bytes(p.grad) if p.grad is not None else 0)
        for state in opt.optimizer.state.values():
            total += sum(local_bytes(v) for v in state.values() if torch.is_tensor(v) and v.dim() > 0)
    return total / 2**20


def step_metrics(run, exp: Experience, raw_rewards: torch.Tensor, finished: torch.Tensor, n: int,
                 update_stats: dict[str, float], timings: dict[str, float], *,
                 lengths: torch.Tensor | None = None) -> dict[str, float]:
    """The step's metrics over the global batch (exp, raw_rewards [B], finished [B]: every rank's rows).
    ``lengths`` [B]: the response lengths, when exp.response_mask no longer shows them (algo.mask_truncated)."""
    mask = exp.response_mask
    lengths = (mask.sum(dim=1) if lengths is None else lengths).double()
    out = {
        **_moments("reward", raw_rewards),
        "reward/skipped": float((~torch.isfinite(raw_rewards)).sum()),
        "response_length/mean": lengths.mean().item(),
        "response_length/max": lengths.max().item(),
        "response_length/clip_ratio": (~finished).double().mean().item(),  # cut at max_new_tokens
        # in float64: a sum over the batch's tokens of float32 returns near float32's limit would overflow
        "advantages/mean": masked_mean(exp.advantages.double(), mask).item(),
        "advantages/std": masked_var(exp.advantages.double(), mask).sqrt().item(),
        "returns/mean": masked_mean(exp.returns.double(), mask).item(),
        "data/skipped_prompts": float(run.skipped_prompts),
        "data/epoch": float(run.sampler.epoch),
    }
    if n > 1:
        groups = raw_rewards.view(-1, n)
        out["frac_reward_zero_std"] = (groups.amax(dim=1) == groups.amin(dim=1)).double().mean().item()
    if exp.ref_logp is not None:
        # the configured estimator's per-token KL(pi_old || pi_ref), and the k1 sum per sequence
        est = run.cfg.algo.kl.estimator
        out["kl"] = masked_mean(kl_estimate(exp.old_logp, exp.ref_logp, est), mask).item()
        out["kl/seq_k1"] = ((exp.old_logp - exp.ref_logp) * mask).sum(dim=1).mean().item()
    if exp.values is not None:
        out["critic/values_mean"] = masked_mean(exp.values.double(), mask).item()
    generated = lengths.sum().item()  # every generated token, masked ones too
    out["perf/tokens_per_s"] = generated / timings["timing/step"]
    out["perf/rollout_tokens_per_s"] = generated / timings["timing/rollout"]
    out["perf/model_state_mb"] = dist.global_max(torch.tensor(model_state_mb(run))).item()
    # the largest rank's peak: the one that decides whether a run fits
    out["perf/peak_rss_mb"] = dist.global_max(torch.tensor(peak_rss_mb())).item()
    if torch.cuda.is_available():
        out["perf/peak_gpu_mb"] = dist.global_max(torch.tensor(torch.cuda.max_memory_allocated() / 2**20)).item()
    return {**out, **update_stats, **timings}
