"""train.compile on and off in the whole trainer: the TRL workload's steps, phases and total wall time, alternating.

Each run is a fresh process (benchmarks/_common.py run_ours) on the tiny TRL workload of trl_vs_ours.py (the
shipped 4.2M base model, 32 prompts x 4 samples, 32 new tokens, one mini-batch) for ``--steps`` steps. Variants,
run A B C ... per round:

  off           train.compile=false (the default; train.shared_prefix on, its default)
  off-unshared  train.compile=false, train.shared_prefix=false
  on-warm       train.compile=true, shared_prefix=false, inductor cache warm (a persistent
                TORCHINDUCTOR_CACHE_DIR, filled by one untimed run first)
  on-cold       train.compile=true, shared_prefix=false, an empty TORCHINDUCTOR_CACHE_DIR per run
  on-shared     train.compile=true with shared_prefix on (warm cache): the shared forwards call the layers with a
                KV cache, which run eagerly, so this shows what compile costs when it cannot act

Steady state: median over the steps after ``--warmup`` (steps 1-2 compile: the update's forward and backward at
step 1, ...). Total: the ``train()`` call's wall time (model loading, compilation, all steps; not the interpreter
start).

    .venv/bin/python benchmarks/train_compile.py --rounds 3 --steps 20
    .venv/bin/python benchmarks/train_compile.py --workload smol --steps 5 --warmup 2 --rounds 1 --variants off,on-warm
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

VARIANTS = {
    "off": ["train.compile=false"],
    "off-unshared": ["train.compile=false", "train.shared_prefix=false"],
    "on-warm": ["train.compile=true", "train.shared_prefix=false"],
    "on-cold": ["train.compile=true", "train.shared_prefix=false"],
    "on-shared": ["train.compile=true"],
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=("tiny", "smol"), default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the steady-state medians")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=C.DEFAULT_WORK / "train_compile")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    C.print_header(f"train.compile on/off, {args.workload} TRL workload, {args.steps} steps", args.threads)
    if args.workload == "tiny":
        model, prompts, n, new_tokens = C.BASE_MODEL, 32, 4, 32
    else:
        from _flops import SMOL

        model, prompts, n, new_tokens = C.random_llama_dir(SMOL), 8, 4, 32
    warm_cache = args.work / "inductor-warm"

    def runner(label):
        def run(i):
            overrides = C.trl_like_overrides(model, model / "train.jsonl", prompts_per_step=prompts, n=n,
                                             new_tokens=new_tokens, steps=args.steps, output_dir=args.work / "out")
            cache = tempfile.mkdtemp(prefix="inductor-cold-", dir=args.work) if label == "on-cold" else warm_cache
            saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
            try:
                res = C.run_ours([*overrides, *VARIANTS[label]], run_dir=args.work / label / str(i),
                                 threads=args.threads, label=label)
            finally:
                if saved is None:
                    os.environ.pop("TORCHINDUCTOR_CACHE_DIR")
                else:
                    os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved
            out = C.summarize_ours(res, args.warmup)
            out["total_s"] = res["train_call_seconds"]
            out["first_steps_s"] = res["step_seconds"][: args.warmup]
            out["load"] = os.getloadavg()[0]
            return out
        return run

    args.work.mkdir(parents=True, exist_ok=True)
    if any(v in ("on-warm", "on-shared") for v in variants):  # fill the warm cache (untimed)
        print("warming the inductor cache ...", flush=True)
        runner("on-warm")(-1)
        if "on-shared" in variants:
            runner("on-shared")(-1)
    results = C.alternate({v: runner(v) for v in variants}, args.rounds)
    base = {k: C.median([r[k] for r in results[variants[0]]]) for k in ("median_step_s", "update_s", "experience_s",
                                                                      "total_s")}
    rows = []
    for v in variants:
        med = {k: C.median([r[k] for r in results[v]]) for k in ("median_step_s", "update_s", "experience_s",
                                                                 "rollout_s", "total_s")}
        first = C.median([sum(r["first_steps_s"]) for r in results[v]])
        rows.append([v, f"{med['median_step_s']:.3f} ({med['median_step_s'] / base['median_step_s']:.2f}x)",
                     f"{med['update_s']:.3f} ({med['update_s'] / base['update_s']:.2f}x)",
                     f"{med['experience_s']:.3f} ({med['experience_s'] / base['experience_s']:.2f}x)",
                     f"{med['rollout_s']:.3f}", f"{first:.1f}",
                     f"{med['total_s']:.1f} ({med['total_s'] / base['total_s']:.2f}x)",
                     " ".join(f"{r['load']:.1f}" for r in results[v])])
    print(f"\nmedians of {args.rounds} runs per variant; ratios to {variants[0]}; steady state = steps "
          f"{args.warmup + 1}-{args.steps}\n")
    print(C.md_table(["variant", "step s", "update s", "experience s", "rollout s",
                      f"steps 1-{args.warmup} s", f"total {args.steps} steps s", "load (1 min) per run"], rows))
    C.write_json(args.json_out, {"argv": sys.argv, "results": results})


if __name__ == "__main__":
    main()
