"""Data-parallel training on this CPU: torchrun with 2 ranks x 1 thread against 1 process x 2 threads, and the
memory FSDP2 saves per rank.

    .venv/bin/python benchmarks/distributed.py speed  [--repeats 3]   # the demo's RL workload, alternating
    .venv/bin/python benchmarks/distributed.py memory                 # SmolLM2-135M's shape, 1 vs 2 ranks
    .venv/bin/python benchmarks/distributed.py lora                   # the same, 1 process: full vs LoRA r=16

speed: REINFORCE++ on the 4.2M-parameter base model of ../shared/bench (the demo's model size), 128 prompts x 1
sample, 32 new tokens (EOS masked), mini-batches of 64, 6 steps (the first left out); the same config in one
process with 2 threads and under torchrun with 2 ranks of 1 thread, alternating A B A B. Printed: the median
time per step and its phases, and the 2-rank run's time in explicit collectives (timing/collectives: gathering
the experience, reducing statistics, refreshing the sampler's replica; FSDP's own all-gathers and
reduce-scatters run inside forward and backward and are part of the experience and update phases).

memory: a random-init Llama of SmolLM2-135M's shape, 8 prompts x 1 sample, 8 new tokens, 2 steps, under torchrun
with 1 and then 2 ranks (1 thread each). Printed per rank: perf/model_state_mb (weights + optimizer states this
rank holds: its FSDP2 shards) and the peak RSS of the largest rank (which also holds the sampler's full replica
of the policy and the libraries). Then one process (2 threads) with 128 new tokens, train.gradient_checkpointing
off and on: the peak RSS.

lora: the memory workload in one process (2 threads), full fine-tuning against model.lora (rank 16, all linear
layers; the reference is then the policy with its adapters off instead of a second copy). Printed: weights +
optimizer states, the peak RSS, and the median step and rollout time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _flops import SMOL  # noqa: E402


def train_command(overrides: list[str], ranks: int) -> tuple[list[str], dict[str, str]]:
    train = ["-m", "reinforcepp", "train", "--config", str(C.CONFIGS / "reinforce_pp.yaml"), *overrides]
    threads = 1 if ranks else 2
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}
    if ranks:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", *train], env
    return [sys.executable, *train], env


def run(overrides: list[str], out: Path, ranks: int) -> list[dict]:
    command, env = train_command([*overrides, f"output_dir={out}"], ranks)
    subprocess.run(["rm", "-rf", str(out)], check=True)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=C.ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)}\nfailed:\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    print(f"  {'torchrun x' + str(ranks) if ranks else '1 process'}: {time.perf_counter() - started:.0f} s", flush=True)
    return rows


def speed(args) -> dict:
    w = dict(prompts=128, new_tokens=32, batch=64, steps=6)
    overrides = [
        f"model.policy={C.BASE_MODEL}", "model.dtype=float32", f"data.prompts={C.BASE_MODEL / 'train.jsonl'}",
        "data.apply_chat_template=false", "data.shuffle=false", "reward.function=reinforcepp.rewards.toy:leading_integer",
        f"rollout.batch_size={w['prompts']}", f"rollout.max_new_tokens={w['new_tokens']}",
        f"rollout.min_new_tokens={w['new_tokens']}", f"train.batch_size={w['batch']}", f"train.micro_batch_size={w['batch']}",
        f"train.num_steps={w['steps']}", "algo.kl.coef=0.001", "actor.optim.lr=1e-5", "device=cpu",
        "log.progress=false", "log.tensorboard=false", "ckpt.every=0",
    ]
    results: dict[str, list[dict]] = {"1 process x 2 threads": [], "2 ranks x 1 thread": []}
    for i in range(args.repeats):
        for label, ranks in (("1 process x 2 threads", 0), ("2 ranks x 1 thread", 2)):
            rows = run(overrides, args.work / f"speed-{ranks}-{i}", ranks)[1:]
            summary = {f"{k}_s": statistics.median(r[f"timing/{k}"] for r in rows) for k in (*C.PHASES, "step")}
            summary["collectives_s"] = statistics.median(r.get("timing/collectives", 0.0) for r in rows)
            results[label].append(summary)
    keys = ("step_s", *(f"{p}_s" for p in C.PHASES), "collectives_s")
    med = {label: {k: C.median([r[k] for r in rs]) for k in keys} for label, rs in results.items()}
    headers = ["run", "s/step", *(f"{p} s" for p in C.PHASES), "collectives s", "collectives share"]
    rows = [[label, *(f"{m[k]:.3f}" for k in keys), f"{m['collectives_s'] / m['step_s']:.1%}"] for label, m in med.items()]
    a, b = med["2 ranks x 1 thread"], med["1 process x 2 threads"]
    rows.append(["ratio 2 ranks / 1 process", *(f"{a[k] / b[k]:.2f}x" if b[k] else "-" for k in keys), ""])
    print(C.md_table(headers, rows))
    return {"workload": w, "runs": results, "medians": med}


def memory_workload(args) -> list[str]:
    """SmolLM2-135M's shape, 8 prompts x 1 sample, 8 new tokens, 2 steps, KL in the reward (a reference)."""
    prompts = args.work / "prompts.jsonl"
    prompts.parent.mkdir(parents=True, exist_ok=True)
    prompts.write_text("".join(json.dumps({"prompt": f"{i}+{i}=", "answer": str(2 * i)}) + "\n" for i in range(64)))
    model = C.random_llama_dir(SMOL, prompts=prompts)
    return [
        f"model.policy={model}", "model.dtype=float32", f"data.prompts={prompts}", "data.apply_chat_template=false",
        "reward.function=reinforcepp.rewards.toy:leading_integer", "rollout.batch_size=8", "rollout.max_new_tokens=8",
        "rollout.min_new_tokens=8", "train.batch_size=8", "train.micro_batch_size=4", "train.num_steps=2",
        "algo.kl.coef=0.001", "device=cpu", "log.progress=false", "log.tensorboard=false", "ckpt.every=0",
    ]


def memory(args) -> dict:
    overrides = memory_workload(args)
    out = {}
    for ranks in (1, 2):
        last = run(overrides, args.work / f"memory-{ranks}", ranks)[-1]
        out[f"torchrun x{ranks}"] = {"model_state_mb": last["perf/model_state_mb"], "peak_rss_mb": last["perf/peak_rss_mb"]}
    # activation checkpointing, one process: longer sequences, where activations matter
    long = [*overrides, "rollout.max_new_tokens=128", "rollout.min_new_tokens=128", "train.micro_batch_size=8"]
    for flag in ("false", "true"):
        last = run([*long, f"train.gradient_checkpointing={flag}"], args.work / f"memory-ckpt-{flag}", 0)[-1]
        out[f"1 process, 128 new tokens, gradient_checkpointing={flag}"] = {
            "model_state_mb": last["perf/model_state_mb"], "peak_rss_mb": last["perf/peak_rss_mb"]}
    print(C.md_table(["run", "weights + optimizer states per rank (MiB)", "peak RSS of the largest rank (MiB)"],
                     [[r, f"{v['model_state_mb']:.0f}", f"{v['peak_rss_mb']:.0f}"] for r, v in out.items()]))
    ratio = out["torchrun x2"]["model_state_mb"] / out["torchrun x1"]["model_state_mb"]
    print(f"per-rank model state, 2 ranks / 1 rank: {ratio:.2f}")
    return out


def lora(args) -> dict:
    overrides = memory_workload(args)
    out = {}
    for name, extra in (("full", []), ("lora", ["model.lora.rank=16"])):
        rows = run([*overrides, *extra], args.work / f"lora-{name}", 0)
        out[name] = {"model_state_mb": rows[-1]["perf/model_state_mb"], "peak_rss_mb": rows[-1]["perf/peak_rss_mb"],
                     "step_s": statistics.median(r["timing/step"] for r in rows),
                     "rollout_s": statistics.median(r["timing/rollout"] for r in rows)}
    print(C.md_table(["fine-tuning", "weights + optimizer states (MiB)", "peak RSS (MiB)", "step (s)", "rollout (s)"],
                     [[k, f"{v['model_state_mb']:.0f}", f"{v['peak_rss_mb']:.0f}", f"{v['step_s']:.2f}",
                       f"{v['rollout_s']:.2f}"] for k, v in out.items()]))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["speed", "memory", "lora"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=C.DEFAULT_WORK / "distributed")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    C.print_header(f"torchrun on CPU: {args.mode}")
    result = {"speed": speed, "memory": memory, "lora": lora}[args.mode](args)
    C.write_json(args.json_out, {"argv": sys.argv, **result})


if __name__ == "__main__":
    main()
