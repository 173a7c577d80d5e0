"""On a CUDA device (skipped elsewhere; benchmarks/gpu_check.py runs them): RL steps in bf16 autocast, and a
torchrun job with FSDP2 on NCCL in bf16 mixed precision, checked for finite metrics and weights; each with full
fine-tuning and with LoRA (model.lora)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reinforcepp.presets import PRESETS_DIR
from reinforcepp.train import train

CONFIGS = PRESETS_DIR

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def _finite_metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        for key in ("reward/mean", "actor/pg_loss", "actor/grad_norm"):
            assert math.isfinite(row[key]), (key, row)
    return rows


LORA = pytest.mark.parametrize("extra", [[], ["model.lora.rank=4"]], ids=["full", "lora"])


@LORA
def test_rl_steps_on_cuda(make_config, tmp_path, extra):
    cfg = make_config(CONFIGS / "reinforce_pp.yaml", "device=cuda", f"output_dir={tmp_path / 'run'}", *extra)
    final = train(cfg)
    assert len(_finite_metrics(tmp_path / "run")) == cfg.train.num_steps
    assert all(torch.isfinite(t).all() for t in load_file(final / "model.safetensors").values())
    assert (final / "adapter").is_dir() == bool(extra)


@pytest.mark.parametrize("offload", ["false", "true"])
@LORA
def test_torchrun_fsdp2_bf16_on_nccl(offload, tiny_dir, prompt_file, tmp_path, extra):
    out = tmp_path / "run"
    overrides = [
        f"model.policy={tiny_dir}", f"data.prompts={prompt_file}", "reward.function=reinforcepp.rewards.toy:target_char_share",
        "rollout.batch_size=4", "rollout.max_new_tokens=6", "train.batch_size=4", "train.micro_batch_size=2",
        "train.num_steps=2", "ckpt.every=1", "device=cuda", "dist.mixed_precision=bfloat16",
        f"dist.cpu_offload={offload}", "log.progress=false", "log.tensorboard=false", f"output_dir={out}", *extra,
    ]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
               "-m", "reinforcepp", "train", "--config", str(CONFIGS / "reinforce_pp.yaml"), *overrides]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_finite_metrics(out)) == 2
    assert (out / "checkpoints" / "step_00000001" / "sharded" / ".metadata").is_file()
    assert all(torch.isfinite(t).all() for t in load_file(out / "final" / "model.safetensors").values())
    assert (out / "final" / "adapter").is_dir() == bool(extra)
