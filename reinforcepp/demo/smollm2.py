"""The main job on a real pretrained model: SmolLM2-135M-Instruct improved by REINFORCE++-baseline on
one-digit addition asked in words, evaluated before and after on held-out pairs, with the same report as
the tiny job.

Why this task: measured on 64 prompts (16 new tokens, last integer graded), SmolLM2 answers "What is a + b?
Answer with the number only." right 58% of the time greedily but 20% when sampling at T = 1 (it wanders off,
or writes a wrong sum); two-digit sums start at 14% / 5%, too low for the 30 RL steps of 16 samples that
fit the time budget (docs/experiments.md).
Why REINFORCE++-baseline: with 16 samples a step, 4 per prompt, the prompt's mean reward is a baseline that
does not depend on which prompts (easy or hard) the step drew; then the batch's z-score as in REINFORCE++."""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from reinforcepp.config import Config, load_config
from reinforcepp.data.prompts import write_jsonl

from .summary import finish_demo, refuse_non_empty

SMOLLM2_CONFIG = Path(str(files("reinforcepp.demo") / "smollm2.yaml"))
MAX_OPERAND = 9
HELD_OUT = 40  # of the 100 pairs, never trained on


def smollm2_config(output_dir: Path, overrides: Sequence[str] = ()) -> Config:
    """smollm2.yaml with this run's paths and the packaged GGUF model, then the user's overrides (which may
    name another model: the tests use a tiny one)."""
    from reinforcepp.config import ConfigError
    from reinforcepp.models.smollm2 import INSTALL_HINT, SMOLLM2_GGUF, smollm2_dir

    data = output_dir / "data"
    model = smollm2_dir()
    where = [f"model.policy={model}", f"model.gguf_file={SMOLLM2_GGUF}"] if model else []
    if model is None and not any(o.startswith("model.policy=") for o in overrides):
        raise ConfigError(f"model.policy: SmolLM2-135M-Instruct is not installed; {INSTALL_HINT}")
    return load_config(SMOLLM2_CONFIG, [f"data.prompts={data / 'train.jsonl'}",
                                          f"data.eval_prompts={data / 'held_out.jsonl'}",
                                          f"output_dir={output_dir}", *where, *overrides])


def run_smollm2_demo(output_dir: str | Path = "runs/demo-smollm2", overrides: Sequence[str] = ()) -> dict:
    """Run the SmolLM2 job into ``output_dir``; returns the summary also written to ``summary.json``."""
    from reinforcepp.tasks.addition import question_splits
    from reinforcepp.train import train

    import transformers

    transformers.utils.logging.disable_progress_bar()
    out = Path(output_dir)
    refuse_non_empty(out)
    cfg = smollm2_config(out, overrides)  # bad overrides fail here, before any work
    start = time.perf_counter()

    print(f"[1/3] task: one-digit addition in words, {HELD_OUT} of the 100 pairs held out, never trained on")
    train_rows, held_out = question_splits(MAX_OPERAND, HELD_OUT, seed=cfg.seed)
    write_jsonl(train_rows, out / "data" / "train.jsonl")
    write_jsonl(held_out, out / "data" / "held_out.jsonl")

    print(f"[2/3] REINFORCE++-baseline on {Path(cfg.model.gguf_file or cfg.model.policy).name}, "
          f"{cfg.train.num_steps} steps of {cfg.rollout.batch_size} prompts x {cfg.rollout.n_samples_per_prompt} "
          f"samples; held-out evaluation every {cfg.train.eval_every} steps (step 0 = the pretrained model)")
    final = train(cfg)

    print("[3/3] report")
    return finish_demo(cfg, final, start, "REINFORCE++-baseline on SmolLM2-135M-Instruct (reinforcepp demo)",
                       f"{HELD_OUT} addition pairs RL never saw, graded on the response's last integer", "pretrained")
