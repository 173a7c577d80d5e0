"""Generated tokens per second: ``TorchEngine.generate`` vs HF ``model.generate`` on CPU.

Both get the same model, prompts, batch (prompts x n samples), number of new tokens and sampling settings
(temperature 1, no top-k/top-p unless asked). EOS is disabled so that both produce exactly
``batch x max_new_tokens`` tokens: HF with ``min_new_tokens = max_new_tokens``, the engine with an EOS id that
is never sampled. Runs alternate A B A B; the table shows the median tokens/s of each and the ratio.

Workloads:
  tiny   the 4.2M-parameter Llama of ../shared/bench (char tokenizer, prompts like "17+72="),
         32 prompts x 4 samples = 128 sequences, 32 new tokens
  smol   a Llama with SmolLM2-135M's shape (vocab 49152, hidden 576, 30 layers, 9 heads / 3 KV heads, tied
         embeddings), random fp32 weights, 16 prompts of 24-64 random tokens x 1 sample, 64 new tokens

    .venv/bin/python benchmarks/rollout_vs_hf_generate.py                     # both workloads
    .venv/bin/python benchmarks/rollout_vs_hf_generate.py --workload tiny --repeats 7
    .venv/bin/python benchmarks/rollout_vs_hf_generate.py --workload smol --prompts 8 --n 2 --max-new-tokens 32

``--variants`` times several configurations of the engine's fast path in the same alternation (each repeat runs
every variant, then HF): ``eager`` (the default), ``qkv`` / ``gu`` / ``fused`` (fused QKV, fused gate-up, both),
``compile`` and ``compile+fused`` (torch.compile of the decode step). The first call of each variant (the
warm-up, which includes the compilation for the compiled ones) is timed apart and printed.

    .venv/bin/python benchmarks/rollout_vs_hf_generate.py --variants eager,fused,compile,compile+fused --no-peak

``--no-dedup`` passes the n copies of each prompt as separate prompts with n=1 (the engine then cannot
prefill each distinct prompt once; HF never does).

A second table puts the decoding rate against this CPU's fp32 matmul peak at decode shapes: the best
torch.matmul rate of [batch rows x hidden] @ [hidden x intermediate] and of the same product feature-major
([intermediate x hidden] @ [hidden x batch rows], what the engine computes), measured here with the same
threads. Achieved FLOP/s = the FLOPs the generation needs (benchmarks/_flops.py: each distinct prompt
prefilled once, T - 1 one-token forwards per sequence, weights + causal attention + LM head) / its time.
``--no-peak`` skips it; ``--json-out`` writes every number.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_at, write_json  # noqa: E402
from _flops import ModelShape, rl_step_flops  # noqa: E402

DEFAULT_TINY = Path(__file__).resolve().parents[2] / "shared" / "bench" / "base_model"


def load_tiny(path: Path, num_prompts: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    lines = (path / "train.jsonl").read_text().splitlines()[:num_prompts]
    prompts = [tok(json.loads(line)["prompt"])["input_ids"] for line in lines]
    return model, tok, prompts


def load_smol(num_prompts: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True, max_position_embeddings=8192,
        rms_norm_eps=1e-5, rope_theta=100000.0, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float().eval()
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(24, 65, (num_prompts,), generator=g).tolist()
    prompts = [torch.randint(3, config.vocab_size, (n,), generator=g).tolist() for n in lengths]
    return model, None, prompts


def run_hf(model, prompts, n, args, pad_id, seed):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=True, temperature=args.temperature,
            top_k=args.top_k, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
            min_new_tokens=args.max_new_tokens, num_return_sequences=n, pad_token_id=pad_id,
        )
    dt = time.perf_counter() - t0
    new = out.shape[1] - width
    assert out.shape[0] == len(prompts) * n and new == args.max_new_tokens, (out.shape, width)
    return out.shape[0] * new / dt


def run_engine(engine, prompts, n, args, vocab, seed):
    from reinforcepp.rollout import SamplingParams

    params = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        eos_token_ids=(vocab,),  # an id the model cannot produce: EOS disabled
    )
    if args.no_dedup:
        prompts, n = [p for p in prompts for _ in range(n)], 1
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    r = engine.generate(prompts, params, n=n, generator=gen)
    dt = time.perf_counter() - t0
    assert r.response_mask.shape == (len(prompts) * n, args.max_new_tokens), r.response_mask.shape
    assert int(r.response_mask.sum()) == r.response_mask.numel()
    return r.response_mask.numel() / dt


VARIANTS = {
    "eager": {},
    "qkv": dict(fuse_qkv=True),
    "gu": dict(fuse_gate_up=True),
    "fused": dict(fuse_qkv=True, fuse_gate_up=True),
    "compile": dict(compile=True),
    "compile+qkv": dict(compile=True, fuse_qkv=True),
    "compile+fused": dict(compile=True, fuse_qkv=True, fuse_gate_up=True),
}


def bench(name, model, tok, prompts, n, args):
    from reinforcepp.rollout import TorchEngine

    pad_id = tok.pad_token_id if tok is not None else model.config.pad_token_id
    fast = {"auto": None, "off": False, "on": True}[args.fast_path]
    variants = args.variants.split(",")
    engines = {v: TorchEngine(model, tok, fast_path=fast, pad_token_id=pad_id, **VARIANTS[v]) for v in variants}
    vocab = model.config.vocab_size
    # warm-up (also triggers lazy inits; the compiled variants compile here)
    first_call = {}
    for v, engine in engines.items():
        t0 = time.perf_counter()
        run_engine(engine, prompts, n, args, vocab, 0)
        first_call[v] = time.perf_counter() - t0
        print(f"  [{name}] first call of {v}: {first_call[v]:.2f} s", flush=True)
    run_hf(model, prompts, n, args, pad_id, 0)
    ours, hf = {v: [] for v in variants}, []
    for i in range(args.repeats):
        for v, engine in engines.items():
            ours[v].append(run_engine(engine, prompts, n, args, vocab, i + 1))
        hf.append(run_hf(model, prompts, n, args, pad_id, i + 1))
        print(f"  [{name}] repeat {i + 1}: " + "  ".join(f"{v} {ours[v][-1]:8.0f}" for v in variants)
              + f"  hf {hf[-1]:8.0f} tok/s", flush=True)
    if len(variants) > 1:
        base = variants[0]
        print(f"  [{name}] medians (tok/s), ratio to {base}, first call s: " + "; ".join(
            f"{v} {statistics.median(ours[v]):.0f} ({statistics.median(ours[v]) / statistics.median(ours[base]):.3f}x, "
            f"{first_call[v]:.1f} s)" for v in variants), flush=True)
        # per-repeat ratios (each against the same repeat's base run): steadier than a ratio of medians
        for v in variants[1:]:
            r = [a / b for a, b in zip(ours[v], ours[base])]
            print(f"  [{name}] {v} / {base} per repeat: median {statistics.median(r):.3f}x, "
                  f"range {min(r):.3f}-{max(r):.3f}", flush=True)
    engine = engines[variants[0]]
    row = dict(
        workload=name, batch=len(prompts) * n, prompts=len(prompts), n=n, new=args.max_new_tokens,
        engine=statistics.median(ours[variants[0]]), hf=statistics.median(hf),
        backend=engine.last_backend + (", no dedup" if args.no_dedup else "")
        + ("" if variants[0] == "eager" else f", {variants[0]}"),
        engine_runs=ours[variants[0]], hf_runs=hf,
        variants={v: dict(runs=ours[v], median=statistics.median(ours[v]), first_call_s=first_call[v]) for v in variants},
    )
    if not args.no_peak:
        c = model.config
        shape = ModelShape(vocab=c.vocab_size, hidden=c.hidden_size, intermediate=c.intermediate_size,
                           layers=c.num_hidden_layers, heads=c.num_attention_heads, kv_heads=c.num_key_value_heads,
                           head_dim=getattr(c, "head_dim", None), tied=c.tie_word_embeddings)
        f = rl_step_flops(shape, [len(p) for p in prompts], n, args.max_new_tokens, reference=False)
        tokens = len(prompts) * n * args.max_new_tokens
        row["flops_per_token"] = (f["rollout_prefill"] + f["rollout_decode"]) / tokens
        row["decode_peak"] = peak_at(row["batch"], c.hidden_size, c.intermediate_size, both_orientations=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["tiny", "smol", "all"], default="all")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=None, help="prompts per batch (tiny: 32, smol: 16)")
    ap.add_argument("--n", type=int, default=None, help="samples per prompt (tiny: 4, smol: 1)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="tiny: 32, smol: 64")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--fast-path", choices=["auto", "on", "off"], default="auto", help="engine backend")
    ap.add_argument("--variants", default="eager",
                    help=f"comma-separated engine variants, alternated; the first is the table's (one of {', '.join(VARIANTS)})")
    ap.add_argument("--no-dedup", action="store_true", help="give the engine the n copies as separate prompts")
    ap.add_argument("--tiny-model", type=Path, default=DEFAULT_TINY)
    ap.add_argument("--no-peak", action="store_true", help="skip the fp32 matmul peak and the second table")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke check: tiny only, 2 repeats")
    args = ap.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    if args.quick:
        args.workload, args.repeats = "tiny", 2
    torch.set_num_threads(args.threads)
    print("command: " + shlex.join([sys.executable, *sys.argv]), flush=True)
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; torch {torch.__version__}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    rows = []
    for name in (["tiny", "smol"] if args.workload == "all" else [args.workload]):
        defaults = {"tiny": (32, 4, 32), "smol": (16, 1, 64)}[name]
        num_prompts = args.prompts or defaults[0]
        n = args.n or defaults[1]
        run_args = argparse.Namespace(**vars(args))
        run_args.max_new_tokens = args.max_new_tokens or defaults[2]
        if name == "tiny":
            model, tok, prompts = load_tiny(args.tiny_model, num_prompts)
        else:
            model, tok, prompts = load_smol(num_prompts)
        print(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
              f"{num_prompts} prompts x {n}, {run_args.max_new_tokens} new tokens, threads {args.threads}", flush=True)
        rows.append(bench(name, model, tok, prompts, n, run_args))
        del model

    print()
    print("| workload | batch (prompts x n) | new tokens | engine backend | TorchEngine tok/s | HF generate tok/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['batch']} ({r['prompts']} x {r['n']}) | {r['new']} | {r['backend']} "
              f"| {r['engine']:.0f} | {r['hf']:.0f} | {r['engine'] / r['hf']:.2f}x |")
    if not args.no_peak:
        print()
        print("| workload | batch | fp32 matmul peak at decode shape GFLOP/s | FLOP per generated token "
              "| TorchEngine GFLOP/s | TorchEngine / peak | HF generate GFLOP/s | HF / peak |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            fe, fh = r["engine"] * r["flops_per_token"], r["hf"] * r["flops_per_token"]
            print(f"| {r['workload']} | {r['batch']} | {r['decode_peak'] / 1e9:.1f} "
                  f"| {r['flops_per_token'] / 1e6:.2f} M "
                  f"| {fe / 1e9:.1f} | {fe / r['decode_peak']:.1%} | {fh / 1e9:.1f} | {fh / r['decode_peak']:.1%} |")
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    write_json(args.json_out, {"argv": sys.argv, "rows": rows})


if __name__ == "__main__":
    main()
