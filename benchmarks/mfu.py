"""Model FLOPs utilization (MFU) of a whole RL step of our trainer, by phase, against this CPU's fp32 matmul
peak measured here at the model's shapes.

FLOPs needed (benchmarks/_flops.py, tested in tests/benchmarks/test_flops.py): 2 per weight per token forward,
3x that forward + backward, plus causal attention (QK^T and AV over the keys each query needs) and the LM head
only where log-probs are needed. Counted separately: the rollout (each distinct prompt prefilled once, then
T - 1 one-token decode forwards per sample), the experience passes (old and reference log-probs: one forward
each over prompt + response) and the training pass (forward + backward, one epoch). MFU of a phase = its FLOPs
/ its wall time (the loop's timing/rollout, timing/experience, timing/update, timing/step) / the peak.

The peak is the best torch.matmul fp32 rate at the model's shapes, measured in this process with the same
thread count as the trainer: [training tokens x hidden] @ [hidden x intermediate] (training-shaped: the batch's
prompt + response tokens as rows) and [batch rows x hidden] @ [hidden x intermediate], in both orientations
(decode-shaped; our decoder computes W @ x). The table's MFU uses the best of all of them; the rollout row also
shows its fraction of the decode-shaped peak.

    .venv/bin/python benchmarks/mfu.py                          # both workloads
    .venv/bin/python benchmarks/mfu.py --workload tiny --repeats 3 --json-out runs/mfu.json
    .venv/bin/python benchmarks/mfu.py --quick                  # smoke check (< 1 min)

Workloads (our trainer with the settings of ../shared/bench/README.md: REINFORCE++-baseline, k3 KL in the
loss, reference model, one mini-batch, one epoch, EOS masked so every response is exactly T tokens):
  tiny  the bench's 4.2M Llama, 32 prompts x 4 samples, T = 32, 6 steps (2 warm-up)
  smol  SmolLM2-135M's shape (vocab 49152, hidden 576, intermediate 1536, 30 layers, 9 / 3 heads, tied), random
        init (built once in /tmp/reinforcepp-bench/models), 4 prompts x 4 samples, T = 16, 3 steps (1 warm-up)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _flops import SMOL, TINY, rl_step_flops  # noqa: E402

WORKLOADS = {
    "tiny": dict(shape=TINY, prompts=32, n=4, new_tokens=32, steps=6, warmup=2),
    "smol": dict(shape=SMOL, prompts=4, n=4, new_tokens=16, steps=3, warmup=1),
}
# phase of the loop's timings -> phases of the FLOP count
PHASE_FLOPS = {
    "rollout": ("rollout_prefill", "rollout_decode"),
    "experience": ("old_logp", "ref_logp", "critic_values"),
    "update": ("actor_train", "critic_train"),
    "step": ("total",),
}


def prompt_token_lengths(model_dir: Path, rows: list[dict]) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return [len(tok(r["prompt"])["input_ids"]) for r in rows]


def measure(name: str, w: dict, args) -> dict:
    shape = w["shape"]
    model = C.BASE_MODEL if name == "tiny" else C.random_llama_dir(shape)
    rows = C.prompt_rows(model / "train.jsonl", w["prompts"] * w["steps"])
    lens = prompt_token_lengths(model, rows)
    B, T = w["prompts"] * w["n"], w["new_tokens"]
    train_rows = B * (max(lens) + T)
    print(f"\n{name}: {model}; {w['prompts']} prompts x {w['n']} samples, T = {T} (EOS masked), {w['steps']} steps "
          f"(first {w['warmup']} excluded), {args.repeats} run(s), threads {args.threads}", flush=True)
    peaks = {
        f"train [{train_rows}x{shape.hidden}]@[{shape.hidden}x{shape.intermediate}]":
            C.peak_at(train_rows, shape.hidden, shape.intermediate, repeats=args.peak_repeats),
        f"decode [{B}x{shape.hidden}]@[{shape.hidden}x{shape.intermediate}] (best orientation)":
            C.peak_at(B, shape.hidden, shape.intermediate, repeats=args.peak_repeats, both_orientations=True),
    }
    for label, rate in peaks.items():
        print(f"  fp32 matmul peak, {label}: {rate / 1e9:.1f} GFLOP/s", flush=True)
    peak, decode_peak = max(peaks.values()), list(peaks.values())[1]

    overrides = C.trl_like_overrides(model, model / "train.jsonl", prompts_per_step=w["prompts"], n=w["n"],
                                     new_tokens=T, steps=w["steps"], output_dir=args.work / "unused")
    runs = C.alternate({name: lambda i: C.run_ours(overrides, run_dir=args.work / f"{name}-{i}", threads=args.threads)},
                       args.repeats)[name]
    # FLOPs of each step from its own prompts (file order: step i uses prompts [i P, (i + 1) P))
    # one mini-batch, one epoch, KL in the loss: log pi_old comes from the training forward (no separate pass)
    step_flops = [rl_step_flops(shape, lens[i * w["prompts"]:(i + 1) * w["prompts"]], w["n"], T, old_pass=False)
                  for i in range(w["steps"])]
    per_run = []
    for res in runs:
        metrics = res["metrics"][w["warmup"]:]
        flops = step_flops[w["warmup"]:]
        assert all(abs(m["response_length/mean"] - T) < 1e-9 for m in metrics), "responses are not all T tokens"
        phase = {}
        for p, parts in PHASE_FLOPS.items():
            f = sum(sum(s[q] for q in parts) for s in flops)
            t = sum(m[f"timing/{p}"] for m in metrics)
            phase[p] = {"gflop_per_step": f / len(flops) / 1e9, "s_per_step": t / len(metrics), "flops_per_s": f / t}
        per_run.append(phase)
    med = {p: {k: C.median([r[p][k] for r in per_run]) for k in ("gflop_per_step", "s_per_step", "flops_per_s")}
           for p in PHASE_FLOPS}
    return {"model": str(model), "peaks": peaks, "peak": peak, "decode_peak": decode_peak, "phases": med,
            "per_run": per_run, "flops_by_phase_step1": step_flops[0], "workload": {**w, "shape": shape.__dict__}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["tiny", "smol", "all"], default="all")
    ap.add_argument("--repeats", type=int, default=2, help="trainer runs per workload (medians over them)")
    ap.add_argument("--steps", type=int, default=None, help="override the workload's RL steps")
    ap.add_argument("--warmup-steps", type=int, default=None)
    ap.add_argument("--peak-repeats", type=int, default=7, help="timed batches of the matmul peak (best of)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=C.DEFAULT_WORK / "mfu")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke check: 1 run, tiny 3 steps of 8 prompts, smol 2 steps "
                                                         "of 2 prompts x 2 with T = 8")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    workloads = {k: dict(v) for k, v in WORKLOADS.items() if args.workload in (k, "all")}
    if args.quick:
        args.repeats, args.peak_repeats = 1, 3
        if "tiny" in workloads:
            workloads["tiny"].update(prompts=8, steps=3, warmup=1)
        if "smol" in workloads:
            workloads["smol"].update(prompts=2, n=2, new_tokens=8, steps=2, warmup=1)
    for w in workloads.values():
        w["steps"] = args.steps or w["steps"]
        w["warmup"] = args.warmup_steps if args.warmup_steps is not None else w["warmup"]
    C.print_header("MFU of an RL step (our trainer, fp32 CPU)", args.threads)
    results = {name: measure(name, w, args) for name, w in workloads.items()}

    print()
    rows = []
    for name, r in results.items():
        for p, m in r["phases"].items():
            extra = f"{m['flops_per_s'] / r['decode_peak']:.1%}" if p == "rollout" else "–"
            rows.append([name, p, f"{m['gflop_per_step']:.2f}", f"{m['s_per_step']:.3f}",
                         f"{m['flops_per_s'] / 1e9:.1f}", f"{r['peak'] / 1e9:.1f}",
                         f"{m['flops_per_s'] / r['peak']:.1%}",
                         extra])
    print(C.md_table(["workload", "phase", "GFLOP/step", "s/step", "GFLOP/s", "peak GFLOP/s", "MFU",
                      "of decode-shape peak"], rows))
    print("\n(rollout = prefill + decode; experience = old + reference log-probs; update = forward + backward "
          "+ optimizer; step = the whole RL step incl. reward and bookkeeping)")
    C.write_json(args.json_out, {"argv": sys.argv, "results": results})


if __name__ == "__main__":
    main()
