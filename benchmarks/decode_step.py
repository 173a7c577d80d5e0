"""The sampler's decode step alone (no prefill, no sampling): eager against fused projections and torch.compile.

The fast path's backend (reinforcepp/rollout/llama_backend.py) prefills the workload's prompts, then runs
``--new-tokens - 1`` one-token decode steps (the next token: the argmax of the logits, not timed); each
variant has its own backend and cache, and their steps interleave (step t of every variant in turn, in an
order that rotates), so that the host's load, which changes by the second on this shared machine, hits
every variant alike. One round = one such rollout; the table gives the median over rounds and the median of
the per-round ratios. Each variant's first rollout, alone, is the warm-up (a compiled variant compiles there)
and is timed apart. Workloads as benchmarks/rollout_vs_hf_generate.py (tiny: 32 prompts x 4 = 128 rows;
smol: 16 rows of the SmolLM2-135M shape).

    .venv/bin/python benchmarks/decode_step.py --workload tiny --rounds 7
    .venv/bin/python benchmarks/decode_step.py --workload smol --rounds 5 --variants eager,qkv,fused,compile,compile+fused
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_at  # noqa: E402
from _flops import ModelShape, rl_step_flops  # noqa: E402
from rollout_vs_hf_generate import DEFAULT_TINY, VARIANTS, load_smol, load_tiny  # noqa: E402


def interleaved(backends, ids, mask, n, new_tokens, rotate):
    """Prefill every backend, then run their decode steps interleaved (step t of each variant in turn, the order
    rotated by ``rotate + t``), so that a change of the host's load hits every variant alike. Returns each
    variant's seconds per decode step over the new_tokens - 1 steps."""
    names = list(backends)
    spent = dict.fromkeys(names, 0.0)
    with torch.inference_mode():
        tokens = {}
        for v, be in backends.items():
            logits = be.prefill(ids, mask, ids.shape[1] + new_tokens, n).repeat_interleave(n, 0)
            tokens[v] = logits.argmax(-1)
        for t in range(new_tokens - 1):
            k = (rotate + t) % len(names)
            for v in names[k:] + names[:k]:
                t0 = time.perf_counter()
                logits = backends[v].decode(tokens[v])
                spent[v] += time.perf_counter() - t0
                tokens[v] = logits.argmax(-1)
    return {v: x / (new_tokens - 1) for v, x in spent.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["tiny", "smol"], default="tiny")
    ap.add_argument("--variants", default="eager,qkv,gu,fused,compile,compile+fused")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=None)
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--new-tokens", type=int, default=None)
    ap.add_argument("--tiny-model", type=Path, default=DEFAULT_TINY)
    args = ap.parse_args(argv)
    from reinforcepp.models.inputs import left_pad
    from reinforcepp.rollout.llama_backend import _LlamaBackend

    torch.set_num_threads(args.threads)
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; torch {torch.__version__}; threads {args.threads}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    P0, n0, T0 = {"tiny": (32, 4, 32), "smol": (16, 1, 64)}[args.workload]
    P, n, T = args.prompts or P0, args.n or n0, args.new_tokens or T0
    model, tok, prompts = load_tiny(args.tiny_model, P) if args.workload == "tiny" else load_smol(P)
    pad = tok.pad_token_id if tok is not None else model.config.pad_token_id
    ids, mask = left_pad(prompts, pad)
    variants = args.variants.split(",")
    peak = peak_at(P * n, model.config.hidden_size, model.config.intermediate_size, both_orientations=True)
    times = {v: [] for v in variants}
    first = {}
    for v in variants:  # warm-up (and compilation), each variant alone
        t0 = time.perf_counter()
        interleaved({v: _LlamaBackend(model, **VARIANTS[v])}, ids, mask, n, T, 0)
        first[v] = time.perf_counter() - t0
        print(f"  first rollout of {v} (warm-up, compilation included): {first[v]:.1f} s", flush=True)
    for r in range(args.rounds):
        got = interleaved({v: _LlamaBackend(model, **VARIANTS[v]) for v in variants}, ids, mask, n, T, r)
        for v in variants:
            times[v].append(got[v])
        print(f"  round {r + 1}: " + "  ".join(f"{v} {got[v] * 1e3:.2f}" for v in variants) + " ms/step", flush=True)
    c = model.config
    shape = ModelShape(vocab=c.vocab_size, hidden=c.hidden_size, intermediate=c.intermediate_size,
                       layers=c.num_hidden_layers, heads=c.num_attention_heads, kv_heads=c.num_key_value_heads,
                       head_dim=getattr(c, "head_dim", None), tied=c.tie_word_embeddings)
    f = rl_step_flops(shape, [len(p) for p in prompts], n, T, reference=False)
    flops_per_step = f["rollout_decode"] / (T - 1)
    peak = max(peak, peak_at(P * n, c.hidden_size, c.intermediate_size, both_orientations=True))  # best of 2
    base = variants[0]
    print(f"\n{args.workload}: {P * n} rows, {T - 1} decode steps, {flops_per_step / 1e9:.3f} GFLOP a step; "
          f"fp32 matmul peak at the decode shape {peak / 1e9:.1f} GFLOP/s "
          "(best of one measurement before and one after the rounds)")
    print(f"| variant | ms/step (median of {len(times[base])}) | / {base} (median of per-round ratios) | GFLOP/s | / peak "
          "| first round s (incl. compilation) |")
    print("|---|---|---|---|---|---|")
    for v in variants:
        m = statistics.median(times[v])
        ratio = statistics.median(a / b for a, b in zip(times[v], times[base]))
        print(f"| {v} | {m * 1e3:.2f} | {ratio:.3f} | {flops_per_step / m / 1e9:.1f} | "
              f"{flops_per_step / m / peak:.1%} | {first[v]:.1f} |")
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
