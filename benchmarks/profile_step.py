"""Where an RL step's time goes: torch profiler over a few steps of our trainer on the peer workload.

The workload of ../shared/bench/README.md (or SmolLM2-135M's shape with ``--workload smol``), run in this
process; steps 1..``--warmup`` are skipped, the next ``--steps`` are profiled. Prints the operators by self
CPU time and the loop's phase times, so a claim about a hot spot comes with its table.

    .venv/bin/python benchmarks/profile_step.py                    # tiny, 2 warm-up + 3 profiled steps
    .venv/bin/python benchmarks/profile_step.py --workload smol --prompts 4 --new-tokens 16
    .venv/bin/python benchmarks/profile_step.py --shapes           # one row per operator and input shapes
    .venv/bin/python benchmarks/profile_step.py --quick            # smoke check
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _flops import SMOL  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["tiny", "smol"], default="tiny")
    ap.add_argument("--prompts", type=int, default=32, help="prompts per step (x --n samples)")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="profiled steps")
    ap.add_argument("--top", type=int, default=20, help="operators to list")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=C.DEFAULT_WORK / "profile")
    ap.add_argument("--quick", action="store_true", help="smoke check: 8 prompts, T = 8, 1 + 1 steps")
    ap.add_argument("--shapes", action="store_true", help="one row per operator and input shapes (recording shapes inflates the time of large "
                    "elementwise ops: use it to find operators, the plain run to time them)")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.new_tokens, args.warmup, args.steps = 8, 8, 1, 1
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    from reinforcepp.config import load_config
    from reinforcepp.train import train

    torch.set_num_threads(args.threads)
    C.print_header("Profile of RL steps (our trainer, fp32 CPU)", args.threads)
    model = C.BASE_MODEL if args.workload == "tiny" else C.random_llama_dir(SMOL)
    shutil.rmtree(args.work, ignore_errors=True)
    total = args.warmup + args.steps
    cfg = load_config(None, C.trl_like_overrides(model, model / "train.jsonl", prompts_per_step=args.prompts, n=args.n,
                                                 new_tokens=args.new_tokens, steps=total, output_dir=args.work))
    phases: dict[str, list[float]] = {}

    when = schedule(wait=max(args.warmup - 1, 0), warmup=min(args.warmup, 1), active=args.steps, repeat=1)
    with profile(activities=[ProfilerActivity.CPU], schedule=when, record_shapes=args.shapes) as prof:
        def on_step_end(step, metrics):
            if step > args.warmup:
                for key, value in metrics.items():
                    if key.startswith("timing/"):
                        phases.setdefault(key, []).append(value)
            prof.step()

        train(cfg, on_step_end=on_step_end)
    print(f"\n{args.workload}: {args.prompts} prompts x {args.n}, T = {args.new_tokens}; profiled steps "
          f"{args.warmup + 1}..{total}; phase means (s): "
          + ", ".join(f"{k[7:]} {sum(v) / len(v):.3f}" for k, v in phases.items()))
    averages = prof.key_averages(group_by_input_shape=args.shapes)
    table = averages.table(sort_by="self_cpu_time_total", row_limit=args.top, max_shapes_column_width=80)
    print(table)
    C.write_json(args.json_out, {"argv": sys.argv, "phases": phases, "table": table})


if __name__ == "__main__":
    main()
