"""REINFORCE++ against PPO with a critic (GAE): wall time per RL step and peak memory, on CPU.

The paper's compute claim (REINFORCE++ 42 h vs PPO 60 h; the critic costs time and memory) in miniature:
the same model, prompts, batch, response length and steps, with the ``reinforce_pp`` and ``ppo`` presets
(reinforcepp/presets/; one sample per prompt each; k1 KL in the reward, coefficient 0.001; PPO adds the critic,
initialised from the policy, its forward in the experience phase and its update). Each run trains in a fresh
process, so its peak RSS is its own; runs alternate REINFORCE++, PPO, REINFORCE++, PPO, ...

    .venv/bin/python benchmarks/ppo_vs_reinforce.py                      # tiny workload, 2 rounds
    .venv/bin/python benchmarks/ppo_vs_reinforce.py --repeats 4 --json-out runs/ppo_vs_reinforce.json
    .venv/bin/python benchmarks/ppo_vs_reinforce.py --workload smol      # SmolLM2-135M's shape, random init
    .venv/bin/python benchmarks/ppo_vs_reinforce.py --quick              # smoke check (< 1 min)

Workloads (defaults):
  tiny  the base model of ../shared/bench (4.2M Llama), its train.jsonl; 128 prompts x 1 sample per step,
        32 new tokens (EOS masked, so both algorithms generate exactly the same number of tokens), mini-batches
        of 64 (2 optimizer steps per RL step, as the paper's 256 prompts / 128 per step), 8 steps (2 warm-up)
  smol  a random-init Llama of SmolLM2-135M's shape (vocab 49152, hidden 576, 30 layers, 9 / 3 heads, tied;
        built once in /tmp/reinforcepp-bench/models), the same prompts; 16 prompts x 1, 16 new tokens,
        mini-batches of 8, 4 steps (1 warm-up). The critic doubles the trained weights: here memory matters more
        than on the tiny model.

Printed: the median time per step of each algorithm (per-run medians, then the median over rounds) and its
phases (rollout, reward, experience, update), the peak RSS and the "training memory" (peak RSS minus the
process's RSS after its imports, before the models load: the part an algorithm can change; on the tiny model
the ~250 MiB of torch/transformers would otherwise hide the difference), and the ratios REINFORCE++ / PPO
against the targets: time <= 0.60, peak memory <= 0.70.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _flops import SMOL  # noqa: E402

ALGOS = {"REINFORCE++": "reinforce_pp.yaml", "PPO": "ppo.yaml"}
DEFAULTS = {  # prompts, new tokens, mini-batch, micro-batch, steps, warm-up
    "tiny": dict(prompts=128, new_tokens=32, batch=64, micro=64, steps=8, warmup=2),
    "smol": dict(prompts=16, new_tokens=16, batch=8, micro=8, steps=4, warmup=1),
}


def overrides(model: Path, prompts: Path, w: dict, args) -> list[str]:
    return [
        f"model.policy={model}", "model.dtype=float32", f"data.prompts={prompts}",
        f"data.max_prompts={w['prompts'] * w['steps']}", "data.apply_chat_template=false",
        "reward.function=reinforcepp.rewards.toy:leading_integer",
        f"rollout.batch_size={w['prompts']}", f"rollout.max_new_tokens={w['new_tokens']}", "data.shuffle=false",
        f"rollout.min_new_tokens={0 if args.natural_eos else w['new_tokens']}",
        f"train.batch_size={w['batch']}", f"train.micro_batch_size={w['micro']}", f"train.num_steps={w['steps']}",
        f"algo.kl.coef={args.kl_coef}",
        "actor.optim.lr=1e-5", "actor.optim.scheduler=constant", "actor.optim.warmup_ratio=0.0",
        "critic.optim.scheduler=constant", "critic.optim.warmup_ratio=0.0",
        f"seed={args.seed}", "device=cpu", "log.tensorboard=false", "log.progress=false", "ckpt.every=0",
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["tiny", "smol"], default="tiny")
    ap.add_argument("--model", type=Path, default=None, help="policy dir (tiny default: ../shared/bench/base_model)")
    ap.add_argument("--prompts-file", type=Path, default=C.BASE_MODEL / "train.jsonl")
    ap.add_argument("--prompts", type=int, default=None, help="prompts (= samples) per RL step")
    ap.add_argument("--new-tokens", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None, help="samples per optimizer step (train.batch_size)")
    ap.add_argument("--micro-batch-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup-steps", type=int, default=None, help="first steps left out of the medians")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of REINFORCE++ + PPO")
    ap.add_argument("--kl-coef", type=float, default=0.001)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--natural-eos", action="store_true", help="do not mask EOS (lengths may then differ)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=C.DEFAULT_WORK / "ppo_vs_reinforce")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true",
                    help="smoke check, 1 round: tiny 32 prompts, 3 steps (1 warm-up); smol 4 prompts, T = 8, "
                         "2 steps (about 1.5 min at 1 thread)")
    args = ap.parse_args(argv)
    w = dict(DEFAULTS[args.workload])
    if args.quick:
        if args.workload == "tiny":
            w.update(prompts=32, batch=16, micro=16, steps=3, warmup=1)
        else:
            w.update(prompts=4, new_tokens=8, batch=4, micro=4, steps=2, warmup=1)
        args.repeats = 1
    for key, value in (("prompts", args.prompts), ("new_tokens", args.new_tokens), ("batch", args.batch_size),
                       ("micro", args.micro_batch_size), ("steps", args.steps), ("warmup", args.warmup_steps)):
        if value is not None:
            w[key] = value
    C.print_header("REINFORCE++ vs PPO (critic, GAE): time per RL step and peak memory", args.threads)
    model = args.model or (C.BASE_MODEL if args.workload == "tiny" else C.random_llama_dir(SMOL))
    print(f"{args.workload}: {model}; {w['prompts']} prompts x 1 sample, {w['new_tokens']} new tokens "
          f"({'natural EOS' if args.natural_eos else 'EOS masked'}), mini-batch {w['batch']} (micro {w['micro']}), "
          f"{w['steps']} steps (first {w['warmup']} excluded), {args.repeats} rounds, threads {args.threads}",
          flush=True)
    common = overrides(model, args.prompts_file, w, args)

    def runner(label: str):
        def run(i: int) -> dict:
            res = C.run_ours(common, preset=C.CONFIGS / ALGOS[label], run_dir=args.work / f"{label}-{i}",
                             threads=args.threads, label=label)
            return C.summarize_ours(res, w["warmup"])
        return run

    runs = C.alternate({label: runner(label) for label in ALGOS}, args.repeats)
    keys = ("median_step_s", *(f"{p}_s" for p in C.PHASES), "peak_rss_mb", "train_rss_mb", "tokens_per_s")
    med = {label: {k: C.median([r[k] for r in rs]) for k in keys} for label, rs in runs.items()}
    for label, rs in runs.items():
        for i, r in enumerate(rs):
            print(f"  {label} #{i + 1}: median {r['median_step_s']:.3f} s/step "
                  f"(max/median {r['max_over_median']:.2f}), "
                  f"peak RSS {r['peak_rss_mb']:.0f} MiB (training {r['train_rss_mb']:.0f} MiB), mean length "
                  f"{r['mean_response_len']:.2f}; steps " + " ".join(f"{t:.2f}" for t in r["step_seconds"]))

    a, b = med["REINFORCE++"], med["PPO"]
    print()
    headers = ["algorithm", "s/step", *(f"{p} s" for p in C.PHASES), "gen tok/s", "peak RSS MiB", "training MiB"]
    rows = [[label, f"{m['median_step_s']:.3f}", *(f"{m[f'{p}_s']:.3f}" for p in C.PHASES), f"{m['tokens_per_s']:.0f}",
             f"{m['peak_rss_mb']:.0f}", f"{m['train_rss_mb']:.0f}"] for label, m in med.items()]
    ratios = {k: a[k] / b[k] for k in keys}
    rows.append(["ratio REINFORCE++/PPO", f"{ratios['median_step_s']:.2f}x",
                 *(f"{ratios[f'{p}_s']:.2f}x" for p in C.PHASES), f"{ratios['tokens_per_s']:.2f}x",
                 f"{ratios['peak_rss_mb']:.2f}x", f"{ratios['train_rss_mb']:.2f}x"])
    print(C.md_table(headers, rows))
    print()
    print(C.md_table(["ratio REINFORCE++ / PPO", "measured", "target", "verdict"], [
        ["time per RL step", f"{ratios['median_step_s']:.2f}", "<= 0.60", C.verdict(ratios["median_step_s"], 0.60)],
        ["peak RSS", f"{ratios['peak_rss_mb']:.2f}", "<= 0.70", C.verdict(ratios["peak_rss_mb"], 0.70)],
        ["training memory (peak RSS - RSS after imports)", f"{ratios['train_rss_mb']:.2f}", "<= 0.70",
         C.verdict(ratios["train_rss_mb"], 0.70)],
    ]))
    C.write_json(args.json_out, {"argv": sys.argv, "workload": w, "model": str(model), "runs": runs,
                                 "medians": med, "ratios": ratios})


if __name__ == "__main__":
    main()
