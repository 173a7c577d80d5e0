"""Peak memory of one rollout with and without ``rollout.max_batch_tokens`` (the sampler's memory budget), on CPU.

Workload: the ``smol`` model of rollout_vs_hf_generate.py (a random fp32 Llama of SmolLM2-135M's shape: vocab
49152, hidden 576, 30 layers, 9 heads / 3 KV heads, intermediate 1536, tied embeddings), 64 prompts of 24-64
random tokens x 8 samples = 512 sequences, 512 new tokens, temperature 1, per-row random streams. EOS is an
id the model cannot produce, so every row runs the full length and the whole KV cache is written.

Each configuration runs in a fresh process: peak = ru_maxrss after the rollout - the RSS after the model is
built (the peak is reset there, so the construction's freed temporaries do not count). That is resident
memory: the KV cache is preallocated with torch.empty, whose pages only become resident when written, so on
CPU a rollout that stops early shows only the written part (a GPU commits the whole allocation at once). ``--rows R`` adds a configuration with
``max_batch_tokens = R x (longest prompt + max_new_tokens)``: at most R rows in flight (fewer when the
prompts' n samples do not divide R). "KV cache" is the
largest chunk's preallocated cache: rows x (its longest prompt + new tokens) x layers x 2 x KV heads x head dim
x 4 bytes.

    .venv/bin/python benchmarks/rollout_memory_budget.py                       # 512 x 512, none vs 64 rows
    .venv/bin/python benchmarks/rollout_memory_budget.py --max-new-tokens 64 --rows 64 128
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, print_header, write_json  # noqa: E402

MIB = 2**20


def kv_bytes_per_slot(config) -> int:
    """Bytes of keys and values of one position of one sequence, over all layers."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * 4


def reset_peak_rss() -> int:
    """Lower the peak RSS (ru_maxrss) to the current RSS, so that the model's construction (whose temporaries
    are freed) does not hide a smaller peak later; returns it in KiB. Linux: /proc/self/clear_refs."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def largest_chunk(lengths: list[int], n: int, new_tokens: int, budget: int | None) -> tuple[int, int]:
    """(rows, KV-cache slots) of the chunk with the largest cache."""
    from reinforcepp.rollout.budget import cache_slots, prompt_chunks

    return max(((end - start) * n, cache_slots((end - start) * n, max(lengths[start:end]), new_tokens))
               for start, end in prompt_chunks(lengths, n, new_tokens, budget))


def child(spec: dict) -> dict:
    """One rollout in this (fresh) process; peak resident memory above the built model."""
    import torch

    torch.set_num_threads(spec["threads"])
    from rollout_vs_hf_generate import load_smol

    from reinforcepp.rollout import RowStreams, SamplingParams, TorchEngine

    model, _, prompts = load_smol(spec["prompts"])
    n, new_tokens, rows = spec["n"], spec["max_new_tokens"], spec["rows_in_flight"]
    lengths = [len(p) for p in prompts]
    budget = None if rows is None else rows * (max(lengths) + new_tokens)
    engine = TorchEngine(model, None, pad_token_id=model.config.pad_token_id, max_batch_tokens=budget)
    params = SamplingParams(max_new_tokens=new_tokens, eos_token_ids=(model.config.vocab_size,))  # never sampled
    streams = RowStreams.for_prompts(0, 1, torch.arange(len(prompts)), n)
    baseline_kib = reset_peak_rss()
    t0 = time.perf_counter()
    rollout = engine.generate(prompts, params, n, streams)
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert int(rollout.response_mask.sum()) == len(prompts) * n * new_tokens  # no row stopped early
    chunk_rows, chunk_slots = largest_chunk(lengths, n, new_tokens, budget)
    return {
        "max_batch_tokens": budget, "chunks": engine.last_stats["chunks"], "rows_in_flight": chunk_rows,
        "backend": engine.last_backend, "seconds": seconds, "longest_prompt": max(lengths),
        "baseline_mib": baseline_kib / 1024, "peak_mib": peak_kib / 1024,
        "rollout_peak_mib": (peak_kib - baseline_kib) / 1024,
        "kv_cache_mib": chunk_slots * kv_bytes_per_slot(model.config) / MIB,
    }


def run_child(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=8, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--rows", type=int, nargs="*", default=[64], help="rows in flight of each budgeted run")
    ap.add_argument("--no-unbudgeted", action="store_true", help="skip the run without a budget")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    print_header("rollout peak memory with and without rollout.max_batch_tokens", args.threads)
    configs = ([] if args.no_unbudgeted else [None]) + args.rows
    rows = []
    for rows_in_flight in configs:
        spec = {"prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens,
                "rows_in_flight": rows_in_flight, "threads": args.threads}
        rows.append(run_child(spec))
        print(f"  rows in flight {rows_in_flight or 'all'}: {rows[-1]}", flush=True)
    print(f"\n{args.prompts} prompts x {args.n} samples = {args.prompts * args.n} sequences, {args.max_new_tokens} "
          f"new tokens, longest prompt {rows[0]['longest_prompt']}, backend {rows[0]['backend']}\n")
    print(md_table(
        ["max_batch_tokens", "chunks", "rows in flight", "KV cache MiB (largest chunk)", "rollout peak RSS MiB",
         "peak RSS MiB", "seconds"],
        [[r["max_batch_tokens"] or "none", r["chunks"], r["rows_in_flight"], f"{r['kv_cache_mib']:.0f}",
          f"{r['rollout_peak_mib']:.0f}", f"{r['peak_mib']:.0f}", f"{r['seconds']:.0f}"] for r in rows],
    ))
    write_json(args.json_out, {"argv": sys.argv, "rows": rows})


if __name__ == "__main__":
    main()
