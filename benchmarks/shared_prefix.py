"""Shared-prefix forwards (train.shared_prefix) on and off: time per RL step, its phases and peak RSS.

Our trainer alone, in fresh processes, the two settings alternating (on, off, on, off, ...); medians over
rounds of each run's median step. The TRL workload's settings otherwise (REINFORCE++-baseline, k3 KL in the
loss, so a reference pass runs; one mini-batch = one micro-batch of every sample; EOS masked).

    .venv/bin/python benchmarks/shared_prefix.py                       # all three workloads
    .venv/bin/python benchmarks/shared_prefix.py --workload long-tiny --rounds 3
    .venv/bin/python benchmarks/shared_prefix.py --quick               # smoke check
    .venv/bin/python benchmarks/shared_prefix.py --forwards --workload short --repeats 7

``--forwards``: instead of whole runs, the two forwards that sharing changes, in one process, alternating on and
off, on random tokens of the workload's shape (every prompt the same length): the experience pass (log-probs
without gradient, as the reference and old-policy passes) and the update's forward + backward (log-probs and
entropy, one micro-batch of every sample). Medians of ``--repeats``; steadier than whole runs on a busy host.

Workloads:
  short      the TRL workload itself (the shipped 4.2M base model, 32 prompts x 4, prompts of 7-9 tokens, 32 new
             tokens): where sharing saves least.
  long-tiny  a random Llama of the base model's shape (vocab 16, hidden 256, 4 layers) with 2048 positions;
             prompts of the bench's problems behind 250 filler characters (trl_grpo_bench.py's --prompt-context
             250: 256-258 tokens), 16 prompts x 8 samples, 64 new tokens.
  long-smol  a random Llama of SmolLM2-135M's shape (vocab 49152), the same prompts, 2 prompts x 8 samples,
             16 new tokens (--smol-* flags; smaller than long-tiny's batch because a step without sharing
             takes minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _flops import SMOL, TINY  # noqa: E402

PROMPT_CONTEXT = 250


def long_prompts(path: Path, count: int, context: int = PROMPT_CONTEXT) -> Path:
    """``count`` prompts of trl_grpo_bench.py's long-prompt workload (its make_prompt_set, data seed 1)."""
    spec = importlib.util.spec_from_file_location("trl_grpo_bench", C.BENCH / "trl_grpo_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in mod.make_prompt_set(count, 1, 99, context)))
    return path


def workloads(args) -> dict[str, dict]:
    out = {}
    if args.workload in ("short", "all"):
        out["short"] = dict(model=C.BASE_MODEL, prompts=None, per_step=32, n=4, new_tokens=32, steps=args.steps,
                            warmup=args.warmup)
    if args.workload in ("long-tiny", "all"):
        out["long-tiny"] = dict(model=TINY, prompts=PROMPT_CONTEXT, per_step=16, n=8, new_tokens=64,
                                steps=args.steps, warmup=args.warmup)
    if args.workload in ("long-smol", "all"):
        out["long-smol"] = dict(model=SMOL, prompts=PROMPT_CONTEXT, per_step=args.smol_prompts, n=8,
                                new_tokens=args.smol_new_tokens, steps=args.smol_steps, warmup=args.smol_warmup)
    return out


def time_forwards(name: str, w: dict, args) -> dict:
    """Median seconds of the no-grad pass and of the update's forward + backward, shared and unshared."""
    import statistics
    import time

    import torch

    from reinforcepp.train.experience import Experience
    from reinforcepp.train.forward import policy_logprobs
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    path = w["model"] if isinstance(w["model"], Path) else C.random_llama_dir(w["model"])
    model = AutoModelForCausalLM.from_pretrained(path).float().eval()
    lp = 8 if w["prompts"] is None else w["prompts"] + 7  # the bench's prompts: 7-9 tokens; 250 + '.' + 'a+b='
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    prompts = torch.randint(3, min(vocab, 16), (w["per_step"], lp), generator=g).repeat_interleave(w["n"], 0)
    rows = prompts.shape[0]
    responses = torch.randint(3, min(vocab, 16), (rows, w["new_tokens"]), generator=g)
    exp = Experience(prompts, torch.ones_like(prompts), responses, torch.ones_like(responses))

    def no_grad(shared):
        with torch.no_grad():
            policy_logprobs(model, exp, 1.0, shared_prefix=shared)

    def update(shared):
        logp, entropy = policy_logprobs(model, exp, 1.0, with_entropy=True, shared_prefix=shared)
        (logp.sum() + 0.01 * entropy.sum()).backward()
        model.zero_grad(set_to_none=True)

    times = {(p, s): [] for p in ("experience", "update") for s in (True, False)}
    for _ in range(args.repeats):
        for phase, fn in (("experience", no_grad), ("update", update)):
            for shared in (True, False):
                t0 = time.perf_counter()
                fn(shared)
                times[phase, shared].append(time.perf_counter() - t0)
    med = {f"{p}_{'shared' if s else 'unshared'}_s": statistics.median(v[1:] or v) for (p, s), v in times.items()}
    print(f"  {name}: [{rows} x ({lp} + {w['new_tokens']})] " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()),
          flush=True)
    return med


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["short", "long-tiny", "long-smol", "all"], default="all")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--smol-prompts", type=int, default=2)
    ap.add_argument("--smol-new-tokens", type=int, default=16)
    ap.add_argument("--smol-steps", type=int, default=3)
    ap.add_argument("--smol-warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=C.DEFAULT_WORK / "shared_prefix")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke check: long-tiny, 2 steps, 1 round")
    ap.add_argument("--forwards", action="store_true", help="time the two forwards in one process (see above)")
    ap.add_argument("--repeats", type=int, default=5, help="--forwards: timed repeats (the first left out)")
    args = ap.parse_args(argv)
    if args.quick:
        args.workload, args.rounds, args.steps, args.warmup = "long-tiny", 1, 2, 1
    C.print_header("train.shared_prefix on / off", args.threads)
    if args.forwards:
        meds = {name: time_forwards(name, w, args) for name, w in workloads(args).items()}
        print(C.md_table(["workload", "pass", "shared s", "unshared s", "shared / unshared"], [
            [name, p, f"{m[p + '_shared_s']:.3f}", f"{m[p + '_unshared_s']:.3f}",
             f"**{m[p + '_shared_s'] / m[p + '_unshared_s']:.2f}**"]
            for name, m in meds.items() for p in ("experience", "update")]))
        C.write_json(args.json_out, {"argv": sys.argv, "results": meds})
        return
    results = {}
    for name, w in workloads(args).items():
        model = w["model"] if isinstance(w["model"], Path) else C.random_llama_dir(w["model"])
        count = w["steps"] * w["per_step"]
        prompts = (model / "train.jsonl" if w["prompts"] is None
                   else long_prompts(args.work / f"prompts-{w['prompts']}-{count}.jsonl", count, w["prompts"]))
        print(f"\n{name}: {model}; {w['per_step']} prompts x {w['n']}, {w['new_tokens']} new tokens, "
              f"{w['steps']} steps (first {w['warmup']} excluded), {args.rounds} rounds", flush=True)

        def run(shared: bool, i: int, w=w, name=name, model=model, prompts=prompts) -> dict:
            run_dir = args.work / f"{name}-{'on' if shared else 'off'}-{i}"
            overrides = C.trl_like_overrides(model, prompts, prompts_per_step=w["per_step"], n=w["n"],
                                             new_tokens=w["new_tokens"], steps=w["steps"], output_dir=run_dir / "run")
            res = C.run_ours([*overrides, f"train.shared_prefix={str(shared).lower()}"], run_dir=run_dir,
                             threads=args.threads)
            return C.summarize_ours(res, w["warmup"])

        runs = C.alternate({"shared": lambda i: run(True, i), "unshared": lambda i: run(False, i)}, args.rounds)
        for label, rs in runs.items():
            for i, r in enumerate(rs):
                print(f"  {name} {label} #{i + 1}: median {r['median_step_s']:.3f} s/step, peak RSS "
                      f"{r['peak_rss_mb']:.0f} MiB; steps " + " ".join(f"{t:.2f}" for t in r["step_seconds"]))
        results[name] = runs

    print()
    keys = ["median_step_s", *(f"{p}_s" for p in C.PHASES), "peak_rss_mb", "train_rss_mb"]
    rows = []
    for name, runs in results.items():
        med = {label: {k: C.median([r[k] for r in rs]) for k in keys} for label, rs in runs.items()}
        for label in ("shared", "unshared"):
            rows.append([name, label, *(f"{med[label][k]:.3f}" for k in keys[:-2]),
                         *(f"{med[label][k]:.0f}" for k in keys[-2:])])
        rows.append([name, "**shared / unshared**",
                     *(f"{med['shared'][k] / med['unshared'][k]:.2f}" if med["unshared"][k] else "-" for k in keys)])
    print(C.md_table(["workload", "train.shared_prefix", "s/step", *(f"{p} s" for p in C.PHASES), "peak RSS MiB",
                      "training MiB"], rows))
    print("\n(medians over rounds of each run's median; training MiB = peak RSS - RSS before train())")
    C.write_json(args.json_out, {"argv": sys.argv, "results": results})


if __name__ == "__main__":
    main()
