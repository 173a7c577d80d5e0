"""The tiny job (`reinforcepp demo --model tiny`), end to end: make the task, train a small model from
scratch by SFT, improve it with REINFORCE++, evaluate before and after on held-out prompts, write the report.

Why this model and task: a 15-minute budget on 2 CPU cores buys about a hundred RL steps of 512 samples
with a 4M-parameter model, but about 30 of 16 samples with a 135M one (SmolLM2-135M, the main job, on
one-digit sums). So this job, on two-digit sums with carries, trains its own starting policy by SFT on noisy demonstrations (``SFT_NOISE`` of them have a wrong digit):
past the carry transition it answers right greedily, but its samples copy the noise, and REINFORCE++
with a verifier's reward removes it. Nothing is downloaded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from reinforcepp.config import Config, load_config
from reinforcepp.data.prompts import write_jsonl

from .summary import finish_demo, refuse_non_empty

DEMO_CONFIG = Path(str(files("reinforcepp.demo") / "demo.yaml"))
MODEL_SHAPE = {"hidden": 256, "layers": 4, "heads": 4}  # the peer benchmark's 4.2M-parameter Llama
HELD_OUT = 256  # addition pairs never trained on, by SFT or RL
SFT_NOISE = 0.2  # share of SFT targets with one wrong digit: a start that answers right greedily but not when sampling


def demo_configs(output_dir: Path, overrides: Sequence[str] = ()) -> tuple[Config, Config]:
    """(SFT config, RL config): demo.yaml with this run's paths, then the user's overrides."""
    data = output_dir / "data"
    paths = [f"data.prompts={data / 'train.jsonl'}", f"data.eval_prompts={data / 'held_out.jsonl'}",
             f"sft.data={data / 'sft.jsonl'}"]
    sft = load_config(DEMO_CONFIG, [*paths, f"model.policy={output_dir / 'base-model'}",
                                    f"output_dir={output_dir / 'sft'}", *overrides])
    rl = load_config(DEMO_CONFIG, [*paths, f"model.policy={output_dir / 'sft' / 'sft_final'}",
                                   f"output_dir={output_dir}", *overrides])
    return sft, rl


def run_demo(output_dir: str | Path = "runs/demo", overrides: Sequence[str] = ()) -> dict:
    """Run the tiny job into ``output_dir``; returns the summary also written to ``summary.json``."""
    from reinforcepp.stages import run_sft
    from reinforcepp.tasks.addition import addition_splits, with_noisy_responses
    from reinforcepp.testing import save_tiny_checkpoint
    from reinforcepp.train import train

    import transformers

    transformers.utils.logging.disable_progress_bar()  # our bars are the ones to watch
    out = Path(output_dir)
    refuse_non_empty(out)
    sft_cfg, rl_cfg = demo_configs(out, overrides)  # bad overrides fail here, before any work
    start = time.perf_counter()

    print(f"[1/4] task: two-number addition, {HELD_OUT} held-out pairs never trained on")
    train_rows, held_out = addition_splits(held_out=HELD_OUT, seed=rl_cfg.seed)
    write_jsonl(train_rows, out / "data" / "train.jsonl")
    write_jsonl(held_out, out / "data" / "held_out.jsonl")
    write_jsonl(with_noisy_responses(train_rows, SFT_NOISE, seed=rl_cfg.seed), out / "data" / "sft.jsonl")

    print(f"[2/4] SFT of a Llama from scratch ({MODEL_SHAPE}), {sft_cfg.sft.max_steps} steps, "
          f"{SFT_NOISE:.0%} of its targets with a wrong digit")
    save_tiny_checkpoint(out / "base-model", seed=rl_cfg.seed, **MODEL_SHAPE)
    run_sft(sft_cfg)
    sft_seconds = time.perf_counter() - start

    print(f"[3/4] REINFORCE++, {rl_cfg.train.num_steps} steps; held-out evaluation every "
          f"{rl_cfg.train.eval_every} steps (step 0 = the SFT model)")
    final = train(rl_cfg)

    print("[4/4] report")
    return finish_demo(rl_cfg, final, start, "REINFORCE++ on two-number addition (reinforcepp demo)",
                       f"{HELD_OUT} addition prompts that neither SFT nor RL ever saw", "SFT", sft_time_s=sft_seconds)
