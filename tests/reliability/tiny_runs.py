"""Command lines of tiny training runs for the reliability tests (imported by them, not collected)."""

from __future__ import annotations

from pathlib import Path


def tiny_run(model: Path, prompts: Path, output_dir: Path) -> list[str]:
    """Overrides of a one-step run of the tiny model: two prompts, four new tokens, the toy reward, no bar."""
    return [
        f"model.policy={model}", f"data.prompts={prompts}", "reward.function=reinforcepp.rewards.toy:target_char_share",
        "rollout.batch_size=2", "rollout.max_new_tokens=4", "train.batch_size=2", "train.micro_batch_size=2",
        "train.num_steps=1", "log.progress=false", "log.tensorboard=false", f"output_dir={output_dir}",
    ]


def three_steps(model: Path, prompts: Path, output_dir: Path) -> list[str]:
    """`reinforcepp train` argv of a 3-step tiny run with checkpoints at steps 1 and 2."""
    return ["train", *tiny_run(model, prompts, output_dir), "train.num_steps=3", "ckpt.every=1"]


def finished_run(folder: Path, model: Path, prompts: Path) -> Path:
    """A finished 3-step run in ``folder/run``: checkpoints at steps 1 and 2, metrics, the final model."""
    from reinforcepp.cli import main

    run = folder / "run"
    assert main(three_steps(model, prompts, run)) == 0
    return run
