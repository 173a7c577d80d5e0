"""What a checkpoint of the RL loop holds, and putting it back: models, optimizers, schedulers, the
data position, the reward normalizer, the adaptive KL coefficient and the RNG states."""

from __future__ import annotations

import logging
from pathlib import Path

from reinforcepp.config import ConfigError
from reinforcepp.models import lora

from .checkpoint import (
    CheckpointState,
    capture_rng_state,
    complete_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    require_finite,
    restore_rng_state,
    save_checkpoint,
    save_hf_model,
)
from . import dist, sharded_checkpoint, sharding
from .run import Run

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"  # final/adapter: the LoRA adapter of a model.lora run


def _parts(run: Run) -> tuple[dict, dict]:
    modules = {"policy": run.policy}
    objects = {
        "actor_optimizer": run.actor.optimizer,
        "actor_scheduler": run.actor.scheduler,
        "sampler": run.sampler,
        "reward_transform": run.reward_transform,
    }
    if run.kl_controller.adaptive:  # only then: checkpoints of fixed-coef runs keep their layout
        objects["kl_controller"] = run.kl_controller
    if run.critic is not None:
        modules["critic"] = run.critic.model
        objects |= {"critic_optimizer": run.critic.optimizer, "critic_scheduler": run.critic.scheduler}
    return modules, objects


def _trainables(run: Run) -> dict:
    out = {"policy": (run.policy, run.actor.optimizer)}
    if run.critic is not None:
        out["critic"] = (run.critic.model, run.critic.optimizer)
    return out


def _small_objects(run: Run) -> dict:
    """What a sharded checkpoint keeps besides models and optimizers (the same on every rank)."""
    _, objects = _parts(run)
    return {k: v for k, v in objects.items() if not k.endswith("_optimizer")}


def save_state(run: Run, step: int) -> Path:
    if run.sharded:
        objects = {**_small_objects(run), "rng": _RngState()}
        return sharded_checkpoint.save_sharded(run.run_dir / CHECKPOINTS, step, _trainables(run), objects,
                                               keep=run.cfg.ckpt.keep)
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
    if sharded_checkpoint.is_sharded(path):  # written under torchrun: any number of ranks reads it
        step = sharded_checkpoint.load_sharded(path, _trainables(run), {**_small_objects(run), "rng": _RngState()})
    elif run.sharded:  # a one-process checkpoint resumed under torchrun
        sharded_checkpoint.load_full_into_sharded(path, _trainables(run),
                                                  {"policy": "actor_optimizer", "critic": "critic_optimizer"})
        loaded = load_checkpoint(path, objects=_small_objects(run), map_location="cpu")
        restore_rng_state(loaded.objects["rng"])
        step = loaded.step
    else:
        modules, objects = _parts(run)
        loaded = load_checkpoint(path, modules=modules, objects=objects, map_location="cpu")
        restore_rng_state(loaded.objects["rng"])
        step = loaded.step
    log.info("resumed from %s (step %d)", path, step)
    return step


class _RngState:
    """The process's RNG states as a stateful object (a sharded checkpoint stores state dicts only)."""

    def state_dict(self) -> dict:
        return capture_rng_state()

    def load_state_dict(self, state: dict) -> None:
        restore_rng_state(state)


def refuse_to_overwrite(run: Run) -> None:
    """A fresh run must not mix with an earlier run's checkpoints in the same output_dir."""
    if complete_checkpoints(run.run_dir / CHECKPOINTS):
        raise ConfigError(
            f"output_dir: {run.run_dir} already holds checkpoints; set ckpt.resume=true to continue "
            "that run, or choose another output_dir"
        )


def save_final(run: Run) -> Path:
    """The final policy as a Hugging Face model (safetensors + tokenizer); the critic beside it for PPO.
    Under torchrun the full weights are gathered to rank 0, which alone writes (atomically)."""
    final = run.run_dir / "final"
    policy = sharding.export_copy(run.engine.model, run.policy) if run.sharded else run.policy
    critic_state = sharding.full_state_dict(run.critic.model) if run.sharded and run.critic is not None else None
    if dist.is_main():
        export_policy(policy, run.tokenizer, final)
        if run.critic is not None:
            require_finite({"critic": critic_state or run.critic.model}, run.run_dir / "final_critic")
            run.critic.model.save_pretrained(run.run_dir / "final_critic", state_dict=critic_state)
    dist.barrier()
    return final


def export_policy(policy, tokenizer, final: Path) -> None:
    """A plain Hugging Face model in ``final``; for a LoRA policy that is the merged model (loads without
    peft), with the adapter alone in ``final/adapter`` (``PeftModel.from_pretrained(base, final/adapter)``)."""
    if lora.is_lora_model(policy):
        save_hf_model(lora.merged_copy(policy), tokenizer, final, overwrite=True, subdirs={ADAPTER: policy})
    else:
        save_hf_model(policy, tokenizer, final, overwrite=True)
