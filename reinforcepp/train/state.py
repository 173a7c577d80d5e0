"""What a checkpoint of the RL loop holds, and putting it back: models, optimizers, schedulers, the
data position, the reward normalizer and the RNG states."""

from __future__ import annotations

import logging
from pathlib import Path

from reinforcepp.config import ConfigError

from .checkpoint import (
    CheckpointState,
    capture_rng_state,
    complete_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    save_hf_model,
)
from .run import Run

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


def _parts(run: Run) -> tuple[dict, dict]:
    modules = {"policy": run.policy}
    objects = {
        "actor_optimizer": run.actor.optimizer,
        "actor_scheduler": run.actor.scheduler,
        "sampler": run.sampler,
        "reward_transform": run.reward_transform,
    }
    if run.critic is not None:
        modules["critic"] = run.critic.model
        objects |= {"critic_optimizer": run.critic.optimizer, "critic_scheduler": run.critic.scheduler}
    return modules, objects


def save_state(run: Run, step: int) -> Path:
    modules, objects = _parts(run)
    state = CheckpointState(modules=modules, objects={**objects, "rng": capture_rng_state()}, meta={"step": step})
    # overwrite: a resumed run rewrites the checkpoints after the one it resumed from
    return save_checkpoint(run.run_dir / CHECKPOINTS, step, state, keep=run.cfg.ckpt.keep, overwrite=True)


def find_checkpoint(run: Run) -> Path | None:
    """ckpt.resume=true: the newest checkpoint of output_dir; a path: that checkpoint, or the newest
    checkpoint of that run directory."""
    resume = run.cfg.ckpt.resume
    if resume is True:
        return latest_checkpoint(run.run_dir / CHECKPOINTS)
    path = Path(resume)
    for root in (path / CHECKPOINTS, path):
        if (found := latest_checkpoint(root)) is not None:
            return found
    if (path / "COMPLETE").is_file():
        return path
    raise ConfigError(f"ckpt.resume: no checkpoint found at {path}")


def restore_state(run: Run) -> int:
    """Restore the newest checkpoint; returns its step (0 when there is none yet)."""
    path = find_checkpoint(run)
    if path is None:
        log.info("ckpt.resume: no checkpoint in %s yet; starting from step 0", run.run_dir / CHECKPOINTS)
        return 0
    modules, objects = _parts(run)
    loaded = load_checkpoint(path, modules=modules, objects=objects, map_location="cpu")
    restore_rng_state(loaded.objects["rng"])
    log.info("resumed from %s (step %d)", path, loaded.step)
    return loaded.step


def refuse_to_overwrite(run: Run) -> None:
    """A fresh run must not mix with an earlier run's checkpoints in the same output_dir."""
    if complete_checkpoints(run.run_dir / CHECKPOINTS):
        raise ConfigError(
            f"output_dir: {run.run_dir} already holds checkpoints; set ckpt.resume=true to continue "
            "that run, or choose another output_dir"
        )


def save_final(run: Run) -> Path:
    """The final policy as a Hugging Face model (safetensors + tokenizer); the critic beside it for PPO."""
    final = save_hf_model(run.policy, run.tokenizer, run.run_dir / "final", overwrite=True)
    if run.critic is not None:
        run.critic.model.save_pretrained(run.run_dir / "final_critic")
    return final
