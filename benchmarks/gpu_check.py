"""The GPU check: on a machine with one NVIDIA GPU, no network, and torch, transformers (and peft) installed,
run the GPU tests, then a short bf16 FSDP2 REINFORCE++ run of a SmolLM2-135M-shaped random model under
torchrun, and print its tokens/s, step time and peak GPU memory. About 3-5 minutes on an H200.

    python benchmarks/gpu_check.py                 # tests + the SmolLM2-shaped run
    python benchmarks/gpu_check.py --skip-tests --steps 6 --prompts 128

The run: 1 rank (FSDP2 on NCCL, bf16 compute with fp32 master weights and reductions), REINFORCE++ with k1 KL
in the reward (reference model sharded too), ``--prompts`` prompts x 4 samples per step, ``--new-tokens`` new
tokens (EOS masked: every response has that length), one optimizer step per RL step in micro-batches of 32,
a reward that varies between samples (the share of the character "1" in the completion), so the update has
gradients to apply. Random weights: the timing is the point, not the learning.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _flops import SMOL  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def write_prompts(path: Path, count: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randrange(100), rng.randrange(100)
        rows.append({"prompt": f"{a}+{b}=", "answer": str(a + b)})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_tests() -> int:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/train/test_gpu.py",
               "tests/models/test_loading.py", "-k", "cuda or gpu or fsdp"]
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT).returncode


def fsdp_run(work: Path, args) -> dict:
    prompts = write_prompts(work / "prompts.jsonl", args.prompts * args.steps)
    reward = work / "ones_share.py"
    reward.write_text("def reward_func(completions, **kwargs):\n"
                      "    return [c.count('1') / max(len(c), 1) for c in completions]\n")
    model = C.random_llama_dir(SMOL, cache=work / "models", prompts=prompts)
    out = work / "run"
    batch = args.prompts * 4
    overrides = [
        f"model.policy={model}", "model.dtype=float32", f"data.prompts={prompts}", "data.apply_chat_template=false",
        "data.shuffle=false", f"reward.function={reward}",
        f"rollout.batch_size={args.prompts}", "rollout.n_samples_per_prompt=4",
        f"rollout.max_new_tokens={args.new_tokens}", f"rollout.min_new_tokens={args.new_tokens}",
        f"train.batch_size={batch}", "train.micro_batch_size=32", f"train.num_steps={args.steps}",
        "algo.kl.coef=0.001", "actor.optim.lr=1e-5", "device=cuda", "dist.mixed_precision=bfloat16",
        "log.progress=false", "log.tensorboard=false", f"output_dir={out}",
    ]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
               "-m", "reinforcepp", "train", "--config", str(C.CONFIGS / "reinforce_pp.yaml"), *overrides]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        print(result.stdout[-2000:], result.stderr[-4000:], sep="\n")
        raise SystemExit(f"the FSDP run failed (exit {result.returncode})")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = rows[1:] or rows  # the first step includes warm-up (kernels, allocator)
    return {
        "wall_s": wall,
        "step_s": statistics.median(r["timing/step"] for r in timed),
        "phases_s": {p: statistics.median(r[f"timing/{p}"] for r in timed) for p in C.PHASES},
        "tokens_per_s": statistics.median(r["perf/tokens_per_s"] for r in timed),
        "rollout_tokens_per_s": statistics.median(r["perf/rollout_tokens_per_s"] for r in timed),
        "peak_gpu_mb": max(r.get("perf/peak_gpu_mb", float("nan")) for r in rows),
        "reward_mean": [r["reward/mean"] for r in rows],
        "kl": [r.get("kl") for r in rows],
        "grad_norm": [r.get("actor/grad_norm") for r in rows],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=64, help="prompts per step (x 4 samples)")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("OUT", "/tmp")) / "gpu_check")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}", flush=True)
    tests_rc = 0 if args.skip_tests else run_tests()
    result = fsdp_run(args.work, args)
    print()
    print(C.md_table(["SmolLM2-135M shape, bf16 FSDP2, 1 GPU", "value"], [
        ["samples x new tokens per step", f"{args.prompts * 4} x {args.new_tokens}"],
        ["step time (median after step 1)", f"{result['step_s']:.2f} s"],
        *[[f"  {p}", f"{v:.2f} s"] for p, v in result["phases_s"].items()],
        ["generated tokens/s (whole step)", f"{result['tokens_per_s']:.0f}"],
        ["generated tokens/s (rollout)", f"{result['rollout_tokens_per_s']:.0f}"],
        ["peak GPU memory", f"{result['peak_gpu_mb']:.0f} MiB"],
        ["wall time of the torchrun job", f"{result['wall_s']:.0f} s"],
    ]))
    print("reward/mean per step:", result["reward_mean"], "kl:", result["kl"], "grad norm:", result["grad_norm"])
    C.write_json(args.json_out, {"tests_rc": tests_rc, **result})
    return tests_rc


if __name__ == "__main__":
    sys.exit(main())
