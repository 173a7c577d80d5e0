"""Shared helpers of the benchmarks: run our trainer in a fresh process and read back its step times and peak
memory, the workload's files, the fp32 matmul peak, tables and headers.

``python benchmarks/_common.py --child SPEC.json`` is the child side of :func:`run_ours` (not for direct use).

The child trains with ``reinforcepp.train.train``, unpatched. The peer workload's two unusual settings are
config fields: ``rollout.min_new_tokens`` (EOS masked until then: Hugging Face's ``min_new_tokens``, TRL's
``generation_kwargs``) and ``data.shuffle=false`` (prompts in file order).

Step time: the wall time between consecutive ``on_step_end`` callbacks of ``train`` (generation, reward,
experience, update, metrics), as TRL's benchmark times its steps; step 1, whose interval would include model
loading, uses the loop's own ``timing/step``. Peak RSS: ``perf/peak_rss_mb`` of the last step (getrusage of
the child, which ran nothing else).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "bench"
BASE_MODEL = BENCH / "base_model"
CONFIGS = ROOT / "reinforcepp" / "presets"  # the shipped presets
DEFAULT_WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "reinforcepp-bench"
PHASES = ("rollout", "reward", "experience", "update")


# ------------------------------------------------------------------------------------------------ printing


def print_header(title: str, threads: int | None = None) -> None:
    """The command line, the machine and the load, before any number."""
    import torch

    print(f"# {title}")
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; python {platform.python_version()}, "
          f"torch {torch.__version__}; "
          f"cpu: {cpu_model()} x {os.cpu_count()}; threads {threads or torch.get_num_threads()}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(value: float, target: float, *, higher_is_better: bool = False) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "NOT met"


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def call_times(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn``, one per call."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def write_json(path: str | Path | None, obj: Any) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=1, default=str))
        print(f"results: {path}")


# --------------------------------------------------------------------------------------------- matmul peak


def matmul_flops_per_s(m: int, k: int, n: int, *, repeats: int = 5, min_seconds: float = 0.1,
                       transpose: bool = False) -> float:
    """Best fp32 FLOP/s of torch.matmul [m x k] @ [k x n] over ``repeats`` timed batches of calls (each at
    least ``min_seconds``). ``transpose``: compute the same product as [n x k] @ [k x m] (feature-major)."""
    import torch

    if transpose:
        m, n = n, m
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.matmul(a, b, out=out)  # warm-up
    calls = 1
    while True:  # calibrate the number of calls per timed batch
        t0 = time.perf_counter()
        for _ in range(calls):
            torch.matmul(a, b, out=out)
        dt = time.perf_counter() - t0
        if dt >= min_seconds or calls >= 1 << 16:
            break
        calls *= 2
    best = dt / calls
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        for _ in range(calls):
            torch.matmul(a, b, out=out)
        best = min(best, (time.perf_counter() - t0) / calls)
    return 2 * m * k * n / best


def peak_at(rows: int, hidden: int, intermediate: int, *, repeats: int = 5, both_orientations: bool = False) -> float:
    """fp32 matmul peak at [rows x hidden] @ [hidden x intermediate] (best of ``repeats``); with
    ``both_orientations`` also [intermediate x hidden] @ [hidden x rows] (our decode's W @ x), best of both."""
    best = matmul_flops_per_s(rows, hidden, intermediate, repeats=repeats)
    if both_orientations:
        best = max(best, matmul_flops_per_s(rows, hidden, intermediate, repeats=repeats, transpose=True))
    return best


# ------------------------------------------------------------------------------------------------ workload


def prompt_rows(path: Path, count: int | None = None) -> list[dict]:
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines[:count]]


def trl_like_overrides(model_dir: Path, prompts: Path, *, prompts_per_step: int, n: int, new_tokens: int, steps: int,
                       output_dir: Path, beta: float = 0.001, lr: float = 1e-5, seed: int = 0,
                       mask_eos: bool = True) -> list[str]:
    """Our config for the workload of ../shared/bench/README.md: REINFORCE++-baseline (group mean, batch
    std), k3 KL in the loss (no clamp), token-mean loss, one mini-batch of every sample, one epoch, AdamW
    with torch's betas, constant lr, clip 1.0, fp32, T = 1, the first ``steps * prompts_per_step`` prompts in
    file order; ``mask_eos``: every response is exactly ``new_tokens`` long (EOS cannot be sampled)."""
    batch = prompts_per_step * n
    return [
        f"model.policy={model_dir}", "model.dtype=float32", f"data.prompts={prompts}",
        f"data.max_prompts={steps * prompts_per_step}", "data.apply_chat_template=false", "data.shuffle=false",
        "reward.function=reinforcepp.rewards.toy:leading_integer",
        f"rollout.batch_size={prompts_per_step}", f"rollout.n_samples_per_prompt={n}",
        f"rollout.max_new_tokens={new_tokens}", f"rollout.min_new_tokens={new_tokens if mask_eos else 0}",
        "rollout.temperature=1.0", "rollout.top_p=1.0", "rollout.top_k=0",
        "algo.advantage.estimator=reinforce_pp_baseline", f"algo.kl.coef={beta}", "algo.kl.estimator=k3",
        "algo.kl.placement=loss", "algo.kl.clamp=null", "algo.loss.agg=token-mean",
        "algo.loss.clip_low=0.2", "algo.loss.clip_high=0.2",
        f"train.batch_size={batch}", f"train.micro_batch_size={batch}", "train.epochs=1", f"train.num_steps={steps}",
        f"actor.optim.lr={lr}", "actor.optim.scheduler=constant", "actor.optim.warmup_ratio=0.0",
        "actor.optim.weight_decay=0.0", "actor.optim.betas=[0.9, 0.999]", "actor.optim.eps=1e-8",
        "actor.optim.max_grad_norm=1.0", f"seed={seed}", "device=cpu", f"output_dir={output_dir}",
        "log.tensorboard=false", "log.progress=false", "ckpt.every=0",
    ]


def synthetic_tokenizer(vocab_size: int, max_length: int = 64):
    """The bench's character tokenizer (<pad>=0, <eos>=1, <unk>=2, digits, '+', '=', '.') padded with never-
    produced tokens <x16>, <x17>, ... up to ``vocab_size`` entries (they decode to their names)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<eos>", "<unk>"]
    vocab = {t: i for i, t in enumerate(special)}
    for c in "0123456789+=.":
        vocab[c] = len(vocab)
    for i in range(len(vocab), vocab_size):
        vocab[f"<x{i}>"] = i
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.add_special_tokens(special)
    core.pre_tokenizer = pre_tokenizers.Split(pattern=Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   padding_side="left", model_max_length=max_length)


def random_llama_dir(shape, *, cache: Path = DEFAULT_WORK / "models", max_position_embeddings: int = 2048,
                     rope_theta: float = 100000.0, seed: int = 0, prompts: Path = BASE_MODEL / "train.jsonl") -> Path:
    """A saved random-init fp32 Llama of ``shape`` (a _flops.ModelShape) with :func:`synthetic_tokenizer` and
    the bench's prompts as train.jsonl; cached in ``cache`` by its settings (SmolLM2's shape: 515 MiB)."""
    key = json.dumps({"shape": shape.__dict__, "max_pos": max_position_embeddings, "rope": rope_theta, "seed": seed,
                      "format": 1}, sort_keys=True)
    out = Path(cache) / f"llama-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    if (out / "done").exists():
        return out
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    print(f"building a random Llama ({shape}) in {out} ...", flush=True)
    config = LlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        head_dim=shape.hd, hidden_act="silu", max_position_embeddings=max_position_embeddings, rms_norm_eps=1e-5,
        rope_theta=rope_theta, tie_word_embeddings=shape.tied, pad_token_id=0, eos_token_id=1, bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float()
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 0, 1
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, safe_serialization=True)
    synthetic_tokenizer(shape.vocab).save_pretrained(out)
    shutil.copy(prompts, out / "train.jsonl")
    (out / "done").write_text(key)
    del model
    return out


# ------------------------------------------------------------------------------------- our trainer, isolated


def run_ours(overrides: list[str], *, run_dir: Path, threads: int, preset: Path | None = None,
             label: str = "ours") -> dict:
    """Train in a fresh process (``python _common.py --child``) and return its result dict: ``step_seconds``,
    ``metrics`` (metrics.jsonl rows), ``peak_rss_mb``, ``rss_before_train_mb``, ``num_sequences``, ..."""
    run_dir = Path(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    spec = {"overrides": [*overrides, f"output_dir={run_dir / 'run'}"], "preset": str(preset) if preset else None,
            "threads": threads,
            "result": str(run_dir / "result.json")}
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=1))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    log_path = run_dir / "child.log"
    with log_path.open("w") as log:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(run_dir / "spec.json")],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-30:])
        raise RuntimeError(f"{label}: training failed (exit {proc.returncode}); last lines of {log_path}:\n{tail}")
    return json.loads((run_dir / "result.json").read_text())


def summarize_ours(res: dict, warmup: int) -> dict:
    """Median step time (steps after ``warmup``), generated tokens/s over those steps, peak RSS, phase medians."""
    steps, metrics, B = res["step_seconds"], res["metrics"], res["num_sequences"]
    w = min(warmup, max(0, len(steps) - 1))
    timed = steps[w:]
    tokens = [m["response_length/mean"] * B for m in metrics]
    out = {
        "median_step_s": median(timed),
        "max_over_median": max(timed) / median(timed) if timed else float("nan"),
        "tokens_per_s": sum(tokens[w:]) / sum(timed) if timed else float("nan"),
        "mean_response_len": statistics.mean(m["response_length/mean"] for m in metrics),
        "peak_rss_mb": res["peak_rss_mb"],
        "train_rss_mb": res["peak_rss_mb"] - res["rss_before_train_mb"],
        "step_seconds": steps,
        "reward_per_step": [m.get("reward/mean") for m in metrics],
    }
    for phase in PHASES:
        out[f"{phase}_s"] = median([m[f"timing/{phase}"] for m in metrics[w:] if f"timing/{phase}" in m])
    return out


def alternate(runners: dict[str, Callable[[int], dict]], repeats: int) -> dict[str, list[dict]]:
    """Run A B A B ...: ``repeats`` rounds, each calling every runner once (with the round index)."""
    results: dict[str, list[dict]] = {label: [] for label in runners}
    for i in range(repeats):
        for label, fn in runners.items():
            t0 = time.perf_counter()
            results[label].append(fn(i))
            print(f"  round {i + 1}/{repeats} {label}: done in {time.perf_counter() - t0:.1f} s", flush=True)
    return results


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _child(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    from reinforcepp.config import load_config
    from reinforcepp.train import train
    from reinforcepp.train.stats import peak_rss_mb

    cfg = load_config(spec["preset"], spec["overrides"])
    rss_before = rss_mb()
    ends: list[float] = []
    t0 = time.perf_counter()
    train(cfg, on_step_end=lambda step, metrics: ends.append(time.perf_counter()))
    t_total = time.perf_counter() - t0
    run_dir = Path(cfg.output_dir)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    metrics = [m for m in metrics if "timing/step" in m]
    steps = [metrics[0]["timing/step"]] + [b - a for a, b in zip(ends, ends[1:])]
    result = {
        "step_seconds": steps, "metrics": metrics, "train_call_seconds": t_total,
        "num_sequences": cfg.rollout.batch_size * cfg.rollout.n_samples_per_prompt,
        "peak_rss_mb": max(m.get("perf/peak_rss_mb", 0.0) for m in metrics),
        "peak_rss_mb_at_exit": peak_rss_mb(), "rss_before_train_mb": rss_before,
        "threads": torch.get_num_threads(), "config": cfg.model_dump(mode="json"),
        "resource_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    Path(spec["result"]).write_text(json.dumps(result))
    for name in ("final", "final_critic"):  # the saved models are not needed
        shutil.rmtree(run_dir / name, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])
    else:
        sys.exit(__doc__)
