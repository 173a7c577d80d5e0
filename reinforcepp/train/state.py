"""What a checkpoint of the RL loop holds, and putting it back: models, optimizers, schedulers, the
data position, the reward normalizer, the adaptive KL coefficient and the RNG states."""

from __future__ import annotations

import logging
from pathlib import Path

from reinforcepp.config import ConfigError
from reinforcepp.models import in_dtype, lora

from .checkpoint import (
    CHECKPOINTS,
    MARKER,
    CheckpointError,
    CheckpointState,
    checkpoint_problem,
    capture_rng_state,
    complete_checkpoints,
    load_checkpoint,
    require_finite,
    restore_rng_state,
    save_checkpoint,
    save_hf_model,
)
from . import dist, sharded_checkpoint, sharding
from .run import Run

log = logging.getLogger(__name__)
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
    """ckpt.resume=true: the newest intact checkpoint of output_dir; a run directory: its newest intact
    checkpoint; a checkpoint: that one. None (a warning: step 0) when the run stopped before its first
    checkpoint."""
    resume = run.cfg.ckpt.resume
    if resume is True:
        return newest_intact(run.run_dir / CHECKPOINTS)
    path = Path(resume)
    for root in (path / CHECKPOINTS, path):
        if complete_checkpoints(root):
            return newest_intact(root)
    if (path / MARKER).is_file():  # named by the user: no fallback, but say where an intact one is
        problem = problem_of(path)
        if problem is not None:
            raise CheckpointError(f"ckpt.resume: {problem}{_earlier_intact_hint(path)}")
        return path
    if _is_run_dir(path):
        log.warning("ckpt.resume: %s holds no complete checkpoint yet (the run stopped before its first one); "
                    "starting from step 0", path)
        return None
    raise ConfigError(f"ckpt.resume: no checkpoint or run directory at {path}")


def _earlier_intact_hint(path: Path) -> str:
    earlier = [p for _, p in reversed(complete_checkpoints(path.parent)) if p.name < path.name]
    intact = next((p for p in earlier if problem_of(p) is None), None)
    return f"; the earlier checkpoint {intact} is intact: resume from it" if intact else ""


def problem_of(path: Path) -> str | None:
    """``checkpoint_problem`` read by rank 0 alone under torchrun (the files are the same for all)."""
    return dist.broadcast_object(checkpoint_problem(path) if dist.is_main() else None)


def _is_run_dir(path: Path) -> bool:
    """What a run writes at its start (config.yaml) or before its first checkpoint completes."""
    return path.is_dir() and any((path / name).exists() for name in ("config.yaml", "metrics.jsonl", CHECKPOINTS))


def newest_intact(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` whose files match their checksums. A damaged newer one
    is passed over with a warning naming its file (the run redoes the steps after the intact one and
    overwrites it); when none is intact the error names the newest one's damage."""
    complete = [path for _, path in reversed(complete_checkpoints(root))]
    problems = []
    for path in complete:
        problem = problem_of(path)
        if problem is None:
            if problems and dist.is_main():
                log.warning("ckpt.resume: %s; resuming from the earlier intact checkpoint %s",
                            "; ".join(problems), path)
            return path
        problems.append(problem)
    if problems:
        raise CheckpointError(f"ckpt.resume: {problems[0]}; no earlier intact checkpoint in {root}")
    return None


def restore_state(run: Run) -> int:
    """Restore the newest intact checkpoint; returns its step (0 when there is none yet)."""
    path = find_checkpoint(run)
    if path is None:
        log.info("ckpt.resume: no checkpoint in %s yet; starting from step 0", run.run_dir / CHECKPOINTS)
        return 0
    if sharded_checkpoint.is_sharded(path):  # written under torchrun: any number of ranks reads it
        step = sharded_checkpoint.load_sharded(path, _trainables(run), {**_small_objects(run), "rng": _RngState()},
                                               verify=False)  # find_checkpoint verified it
    elif run.sharded:  # a one-process checkpoint resumed under torchrun
        sharded_checkpoint.load_full_into_sharded(path, _trainables(run),
                                                  {"policy": "actor_optimizer", "critic": "critic_optimizer"})
        loaded = load_checkpoint(path, objects=_small_objects(run), map_location="cpu", verify=False)
        restore_rng_state(loaded.objects["rng"])
        step = loaded.step
    else:
        modules, objects = _parts(run)
        # find_checkpoint verified every file's checksum
        loaded = load_checkpoint(path, modules=modules, objects=objects, map_location="cpu", verify=False)
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
        export_policy(policy, run.tokenizer, final, run.cfg.ckpt.final_dtype)
        if run.critic is not None:
            require_finite({"critic": critic_state or run.critic.model}, run.run_dir / "final_critic")
            run.critic.model.save_pretrained(run.run_dir / "final_critic", state_dict=critic_state)
    dist.barrier()
    return final


def export_policy(policy, tokenizer, final: Path, dtype: str = "auto") -> None:
    """A plain Hugging Face model in ``final`` with its weights in ``dtype`` (ckpt.final_dtype); for a LoRA policy
    that is the merged model (loads without peft), with the adapter alone in ``final/adapter``
    (``PeftModel.from_pretrained(base, final/adapter)``)."""
    if lora.is_lora_model(policy):
        save_hf_model(in_dtype(lora.merged_copy(policy), dtype), tokenizer, final, overwrite=True,
                      subdirs={ADAPTER: policy})
    else:
        save_hf_model(in_dtype(policy, dtype), tokenizer, final, overwrite=True)
