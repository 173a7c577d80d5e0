"""How our time per RL step grows with the rollout batch size and with the response length (CPU, fp32).

Two sweeps of our trainer, each run in a fresh process; every round runs every configuration once, in turn
(A B C ... A B C ...), and each cell is the median over rounds of the run's median step time (warm-up steps
left out). Each table gives, against its smallest configuration, the size ratio, the time ratio and their
quotient (time ratio / size ratio: 1.00 = linear, below 1 = better than linear, the expectation).

    .venv/bin/python benchmarks/growth.py                          # both sweeps
    .venv/bin/python benchmarks/growth.py --prompts 8 16 32 64 128 --lengths 8 16 32 48 --repeats 3
    .venv/bin/python benchmarks/growth.py --quick                  # smoke check (< 1 min)

Workload: the settings of ../shared/bench/README.md (its 4.2M Llama and train.jsonl, REINFORCE++-baseline, k3
KL in the loss with a reference model, one mini-batch of every sample, one epoch, EOS masked so that every
response is exactly T tokens, prompts in file order). Batch sweep: --prompts prompts x --n samples at
T = --base-length; length sweep: T in --lengths at --base-prompts prompts x --n. The tiny model's positions
stop at 64, so T <= 58 there (prompts are 4-6 tokens).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def run_config(args, prompts: int, length: int, i: int) -> dict:
    steps = args.steps
    batch = prompts * args.n
    overrides = C.trl_like_overrides(args.model, args.prompts_file, prompts_per_step=prompts, n=args.n,
                                     new_tokens=length, steps=steps, output_dir=args.work / "unused")
    if args.micro_batch_size:
        overrides.append(f"train.micro_batch_size={min(batch, args.micro_batch_size)}")
    res = C.run_ours(overrides, run_dir=args.work / f"p{prompts}-t{length}-{i}", threads=args.threads,
                     label=f"{prompts}x{args.n}, T={length}")
    return C.summarize_ours(res, args.warmup_steps)


def table(title: str, column: str, cells: list[tuple[str, float, dict]]) -> str:
    """cells: (label, size, summary) sorted by size; ratios against the first."""
    size0, t0 = cells[0][1], cells[0][2]["median_step_s"]
    rows = []
    for label, size, m in cells:
        rs, rt = size / size0, m["median_step_s"] / t0
        rows.append([label, f"{m['median_step_s']:.3f}", *(f"{m[f'{p}_s']:.3f}" for p in C.PHASES),
                     f"{m['tokens_per_s']:.0f}", f"{rs:.2f}x", f"{rt:.2f}x", f"{rt / rs:.2f}"])
    return f"{title}\n\n" + C.md_table(
        [column, "s/step", *(f"{p} s" for p in C.PHASES), "gen tok/s", "size ratio", "time ratio",
         "time ratio / size ratio"], rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=C.BASE_MODEL)
    ap.add_argument("--prompts-file", type=Path, default=C.BASE_MODEL / "train.jsonl")
    ap.add_argument("--prompts", type=int, nargs="+", default=[8, 16, 32, 64], help="batch sweep: prompts per step")
    ap.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32, 48], help="length sweep: new tokens")
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--base-length", type=int, default=32, help="T of the batch sweep")
    ap.add_argument("--base-prompts", type=int, default=32, help="prompts per step of the length sweep")
    ap.add_argument("--micro-batch-size", type=int, default=None, help="cap the micro-batch (default: whole batch)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="rounds over all configurations")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=C.DEFAULT_WORK / "growth")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: prompts 8 16, lengths 8 16, 8 prompts / T 16 base, 3 steps, 1 round")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.lengths, args.base_prompts, args.base_length = [8, 16], [8, 16], 8, 16
        args.steps, args.warmup_steps, args.repeats = 3, 1, 1
    C.print_header("Growth of the time per RL step with batch size and response length", args.threads)
    print(f"model {args.model}; n = {args.n}; batch sweep {args.prompts} prompts at T = {args.base_length}; length "
          f"sweep T in {args.lengths} at {args.base_prompts} prompts; {args.steps} steps (first {args.warmup_steps} "
          f"excluded), {args.repeats} rounds, threads {args.threads}", flush=True)
    configs = sorted({(p, args.base_length) for p in args.prompts} | {(args.base_prompts, t) for t in args.lengths})
    runs = C.alternate({f"{p}x{args.n} T={t}": (lambda i, p=p, t=t: run_config(args, p, t, i)) for p, t in configs},
                       args.repeats)
    keys = ("median_step_s", "tokens_per_s", *(f"{p}_s" for p in C.PHASES))
    med = {(p, t): {k: C.median([r[k] for r in runs[f"{p}x{args.n} T={t}"]]) for k in keys} for p, t in configs}
    for (p, t), m in med.items():
        steps = [" ".join(f"{s:.2f}" for s in r["step_seconds"]) for r in runs[f"{p}x{args.n} T={t}"]]
        print(f"  {p}x{args.n} T={t}: median {m['median_step_s']:.3f} s/step; steps per run: " + " | ".join(steps))
    print()
    batch_cells = [(f"{p} x {args.n} = {p * args.n}", p * args.n, med[(p, args.base_length)])
                   for p in sorted(args.prompts)]
    print(table(f"Batch sweep (T = {args.base_length}):", "samples per step", batch_cells))
    print()
    length_cells = [(str(t), t, med[(args.base_prompts, t)]) for t in sorted(args.lengths)]
    print(table(f"Length sweep ({args.base_prompts} x {args.n} samples):", "new tokens T", length_cells))
    C.write_json(args.json_out, {"argv": sys.argv, "runs": {k: v for k, v in runs.items()},
                                 "medians": {f"{p}x{args.n} T={t}": m for (p, t), m in med.items()}})


if __name__ == "__main__":
    main()
