"""Our trainer against TRL's GRPOTrainer on the identical workload of ../shared/bench/README.md, on CPU.

Each trainer runs in its own process, alternately (TRL, ours, TRL, ours, ...); the table gives the median
wall time per RL step (= optimizer step here), generated tokens/s and peak RSS of each, and the ratios
against the targets: ours <= 0.75x TRL's time per step, our peak RSS <= TRL's.

    .venv/bin/python benchmarks/trl_vs_ours.py                      # all three workloads, 3 + 2 + 2 rounds
    .venv/bin/python benchmarks/trl_vs_ours.py --workload tiny --repeats 5 --json-out runs/trl_vs_ours.json
    .venv/bin/python benchmarks/trl_vs_ours.py --quick              # smoke check: tiny, 3 steps, 1 round
    .venv/bin/python benchmarks/trl_vs_ours.py --workload smol --smol-steps 4
    .venv/bin/python benchmarks/trl_vs_ours.py --workload long --long-steps 4 --long-repeats 2

TRL runs from its own virtualenv, created when missing exactly as the README says (never in .venv):
``python3 -m venv /tmp/trl-venv``, ``pip install torch==2.13.0``, then ``pip install -c /tmp/trl-constraints.txt
-r ../shared/bench/requirements.txt`` (trl 1.16.0, transformers 5.23.0). TRL's script is run unchanged:
``/tmp/trl-venv/bin/python ../shared/bench/trl_grpo_bench.py --out-dir /tmp/trl-bench-out ...``.

Workloads:
  tiny  the canonical one: the shipped base model (4.2M Llama, char tokenizer, copied into TRL's cache dir
        /tmp/trl-bench-out/base_model-3bdbf0730e as the README says), the first 640 prompts of its train.jsonl in
        file order, 32 prompts x 4 samples per step, 20 steps (steps 1-2 left out of the medians), 32 new tokens
        with EOS masked, T = 1, reward 1 iff the leading digits of the completion equal a+b, KL k3 in the loss
        with beta 0.001, group-mean / batch-std advantages, token-mean loss over the batch, one mini-batch of
        128, one epoch, AdamW lr 1e-5 constant, wd 0, clip 1.0, fp32.
  smol  SmolLM2-135M's *body* (hidden 576, intermediate 1536, 30 layers, 9 heads, 3 KV heads, tied embeddings),
        random init (TRL's --sft-steps 0), the same settings at a smaller batch: 8 prompts x 4 samples, 16 new
        tokens, 5 steps (2 warm-up), 2 rounds. NOT SmolLM2's vocabulary: trl_grpo_bench.py has no vocabulary flag
        (its tokenizer and model are fixed at the 16-token character vocabulary), so both trainers run vocab 16,
        i.e. 106.2M of SmolLM2's 134.5M parameters (its 49152 x 576 embedding / LM head is what is missing). The
        model is built once, in TRL's cache dir, by trl_grpo_bench.py's own functions (build_tokenizer,
        build_model, make_prompt_set; same seed and code) without its accuracy evaluation of the random model
        (prepare_info.json then holds NaN accuracies), and both trainers load that directory.
  long  the long-prompt, n = 8 workload of issue 17: trl_grpo_bench.py --prompt-context 250 (every prompt behind
        250 filler digits and a '.': 256-258 tokens) --max-position-embeddings 512 --sft-steps 0 (random init of
        the tiny model's shape, built like smol's), 16 prompts x 8 samples, 64 new tokens, 4 steps (1 warm-up),
        2 rounds. Target: ours <= 0.5x TRL's time per step. Our default train.shared_prefix=true computes each
        prompt once per group in the reference and training forwards; TRL computes it 8 times.

What differs between the two trainers, and why (everything else is set to the same value):
  * EOS masking: TRL uses generate(min_new_tokens=32); we set rollout.min_new_tokens=32 (the EOS logit is -inf
    until then: the same distribution as HF's MinNewTokensLengthLogitsProcessor). --natural-eos turns it off on
    both sides.
  * Prompt order: data.shuffle=false, so step i uses prompts [32 i, 32 i + 32) on both sides.
  * Old log-probs: we compute log pi_old with a separate no-grad forward over the batch (the loop always does);
    TRL with num_iterations=1 reuses the training forward's detached log-probs. That is one extra forward per
    step in our step time (work we do, not a setting).
  * Advantages: ours is REINFORCE++-baseline, (R - group mean) then a z-score over all response tokens of the
    batch (population std, floor 1e-8 on the variance, mean re-subtracted); TRL's scale_rewards="batch" is
    (R - group mean) / (unbiased std of the 128 rewards + 1e-4). With every response 32 tokens long the two
    differ only by the sqrt(127/128) factor and the epsilons; same cost.
  * KL term: TRL multiplies k3 by the ratio pi / pi_old (use_bias_correction_kl, its default); the ratio is 1
    on policy but differentiable, so the value is the same and only the gradient differs (by k3 * grad log pi).
    Our KL clamp is off (algo.kl.clamp=null) as TRL has none.
  * AdamW betas: ours default (0.9, 0.95) is set to torch's (0.9, 0.999) that TRL's adamw_torch uses.
  * Randomness: different RNG streams, so the sampled completions and the reward curves differ.
  * Timing: both time a step between consecutive step-end callbacks. Our step 1 uses the loop's own
    timing/step (its callback interval would include model loading); it is a warm-up step either way. Our run
    ends by saving the final model, outside every step. TRL logs through its Trainer; we write metrics.jsonl
    (TensorBoard and the progress bar off).
  * Peak RSS: TRL's getrusage(RUSAGE_SELF) of its process; ours perf/peak_rss_mb (getrusage of our child),
    each including its own imports.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TRL_SCRIPT = C.BENCH / "trl_grpo_bench.py"
LONG_FLAGS = ["--prompt-context", "250", "--max-position-embeddings", "512", "--sft-steps", "0"]
TIME_TARGETS = {"tiny": 0.75, "smol": 0.75, "long": 0.5}  # ours / TRL, time per step
SMOL_FLAGS = ["--hidden-size", "576", "--intermediate-size", "1536", "--num-layers", "30", "--num-heads", "9",
              "--num-kv-heads", "3", "--sft-steps", "0"]


def trl_module():
    """../shared/bench/trl_grpo_bench.py as a module (its top level imports no torch)."""
    spec = importlib.util.spec_from_file_location("trl_grpo_bench", TRL_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_trl_venv(venv: Path) -> Path:
    """TRL's own virtualenv, made as ../shared/bench/README.md says when it is missing; returns its python."""
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import trl"], capture_output=True).returncode == 0:
        return python
    print(f"creating TRL's virtualenv {venv} (README.md of {C.BENCH}) ...", flush=True)
    constraints = Path("/tmp/trl-constraints.txt")
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "torch==2.13.0"], check=True)
    constraints.write_text("torch==2.13.0\n")
    subprocess.run([str(venv / "bin" / "pip"), "install", "-c", str(constraints), "-r",
                    str(C.BENCH / "requirements.txt")], check=True)
    return python


def ensure_trl_base(mod, out_dir: Path, extra_flags: list[str]) -> Path:
    """The base model in TRL's cache dir OUT/base_model-<hash>: the shipped checkpoint (canonical) or, for
    other flags, one built by the script's own functions without its evaluation."""
    args = mod.parse_args(["--out-dir", str(out_dir), *extra_flags])
    path = Path(mod.base_model_dir(args))
    if (path / "prepare_info.json").exists():
        return path
    out_dir.mkdir(parents=True, exist_ok=True)
    if not extra_flags:
        print(f"copying {C.BASE_MODEL} -> {path}", flush=True)
        shutil.copytree(C.BASE_MODEL, path)
        for f in path.rglob("*"):
            f.chmod(0o644)
        path.chmod(0o755)
        return path
    import torch

    print(f"building TRL's base model for {' '.join(extra_flags)} in {path} (no warm start, no evaluation) ...",
          flush=True)
    tokenizer = mod.build_tokenizer()
    model = mod.build_model(args, tokenizer)
    rows = mod.make_prompt_set(args.num_prompts, args.seed + 1, args.max_operand, args.prompt_context)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    with open(tmp / "train.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    info = {"n_params": sum(p.numel() for p in model.parameters()), "greedy_accuracy_first512": math.nan,
            "sampled_accuracy_first512": math.nan, "note": "built by benchmarks/trl_vs_ours.py, not evaluated",
            "key": mod.base_model_key(args), "torch": torch.__version__}
    (tmp / "prepare_info.json").write_text(json.dumps(info, indent=1))
    tmp.rename(path)
    return path


def run_trl(python: Path, args, w: dict, out_dir: Path, json_path: Path) -> dict:
    cmd = [str(python), str(TRL_SCRIPT), "--out-dir", str(out_dir), "--json-out", str(json_path),
           "--steps", str(w["steps"]), "--warmup-steps", str(w["warmup"]), "--threads", str(args.threads),
           "--prompts-per-step", str(w["prompts"]), "--num-generations", str(w["n"]),
           "--max-completion-length", str(w["new_tokens"]), *w["trl_flags"]]
    if args.natural_eos:
        cmd.append("--natural-eos")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    log = json_path.with_suffix(".log")
    with log.open("w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=C.BENCH.parent)
    if proc.returncode:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"TRL failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    res = json.loads(json_path.read_text())
    return {
        "median_step_s": res["median_step_seconds"],
        "max_over_median": max(res["step_seconds"][res["warmup_steps_excluded"]:]) / res["median_step_seconds"],
        "tokens_per_s": res["generated_tokens_per_second"],
        "mean_response_len": res["mean_completion_length"],
        "peak_rss_mb": res["peak_rss_bytes"] / 2**20,
        "step_seconds": res["step_seconds"],
        "reward_per_step": res["reward_per_step"],
        "generation_fraction": res["generation_seconds_fraction"],
        "versions": res["versions"],
    }


def run_our(args, w: dict, base: Path, run_dir: Path) -> dict:
    overrides = C.trl_like_overrides(base, base / "train.jsonl", prompts_per_step=w["prompts"], n=w["n"],
                                     new_tokens=w["new_tokens"], steps=w["steps"], output_dir=run_dir / "run",
                                     mask_eos=not args.natural_eos)
    res = C.run_ours(overrides, run_dir=run_dir, threads=args.threads)
    return C.summarize_ours(res, w["warmup"])


def workloads(args) -> dict[str, dict]:
    out = {}
    if args.workload in ("tiny", "all"):
        out["tiny"] = dict(prompts=32, n=4, new_tokens=32, steps=args.steps, warmup=args.warmup_steps,
                           repeats=args.repeats, trl_flags=[])
    if args.workload in ("smol", "all"):
        out["smol"] = dict(prompts=args.smol_prompts, n=args.smol_n, new_tokens=args.smol_new_tokens,
                           steps=args.smol_steps, warmup=args.smol_warmup_steps, repeats=args.smol_repeats,
                           trl_flags=SMOL_FLAGS)
    if args.workload in ("long", "all"):
        out["long"] = dict(prompts=16, n=8, new_tokens=64, steps=args.long_steps, warmup=args.long_warmup_steps,
                           repeats=args.long_repeats, trl_flags=LONG_FLAGS)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["tiny", "smol", "long", "all"], default=None,
                    help="default all (--quick: tiny)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of TRL + ours, tiny workload")
    ap.add_argument("--steps", type=int, default=20, help="RL steps per run, tiny workload")
    ap.add_argument("--warmup-steps", type=int, default=2, help="first steps left out of medians/throughput")
    ap.add_argument("--smol-prompts", type=int, default=8)
    ap.add_argument("--smol-n", type=int, default=4)
    ap.add_argument("--smol-new-tokens", type=int, default=16)
    ap.add_argument("--smol-steps", type=int, default=5)
    ap.add_argument("--smol-warmup-steps", type=int, default=2)
    ap.add_argument("--smol-repeats", type=int, default=2)
    ap.add_argument("--long-steps", type=int, default=4)
    ap.add_argument("--long-warmup-steps", type=int, default=1)
    ap.add_argument("--long-repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of both trainers")
    ap.add_argument("--natural-eos", action="store_true", help="let both trainers stop at EOS")
    ap.add_argument("--trl-venv", type=Path, default=Path("/tmp/trl-venv"))
    ap.add_argument("--trl-out", type=Path, default=Path("/tmp/trl-bench-out"), help="TRL's --out-dir (its cache)")
    ap.add_argument("--work", type=Path, default=C.DEFAULT_WORK / "trl_vs_ours", help="our runs and the logs")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke check: tiny only, 3 steps (1 warm-up), 1 round")
    args = ap.parse_args(argv)
    if args.quick:
        args.workload = args.workload or "tiny"
        args.steps, args.warmup_steps, args.repeats = 3, 1, 1
        args.smol_steps, args.smol_warmup_steps, args.smol_repeats = 3, 1, 1
        args.long_steps, args.long_warmup_steps, args.long_repeats = 2, 1, 1
    args.workload = args.workload or "all"
    C.print_header("TRL GRPOTrainer vs reinforcepp, identical workload", args.threads)
    python = ensure_trl_venv(args.trl_venv)
    mod = trl_module()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)

    results = {}
    for name, w in workloads(args).items():
        base = ensure_trl_base(mod, args.trl_out, w["trl_flags"])
        print(f"\n{name}: base {base}; {w['prompts']} prompts x {w['n']} = {w['prompts'] * w['n']} samples/step, "
              f"{w['new_tokens']} new tokens ({'natural EOS' if args.natural_eos else 'EOS masked'}), "
              f"{w['steps']} steps (first {w['warmup']} excluded), {w['repeats']} rounds, threads {args.threads}",
              flush=True)
        runs = C.alternate({
            "TRL": lambda i: run_trl(python, args, w, args.trl_out, work / f"trl-{name}-{i}.json"),
            "ours": lambda i: run_our(args, w, base, work / f"ours-{name}-{i}"),
        }, w["repeats"])
        for label, rs in runs.items():
            for i, r in enumerate(rs):
                print(f"  {name} {label} #{i + 1}: median {r['median_step_s']:.3f} s/step (max/median "
                      f"{r['max_over_median']:.2f}), {r['tokens_per_s']:.0f} gen tok/s, peak RSS "
                      f"{r['peak_rss_mb']:.0f} MiB, mean length {r['mean_response_len']:.2f}; steps "
                      + " ".join(f"{t:.2f}" for t in r["step_seconds"]))
        results[name] = {"workload": w, "runs": runs}

    print()
    rows = []
    for name, res in results.items():
        trl, ours = res["runs"]["TRL"], res["runs"]["ours"]
        med = {label: {k: C.median([r[k] for r in rs]) for k in ("median_step_s", "tokens_per_s", "peak_rss_mb")}
               for label, rs in (("TRL", trl), ("ours", ours))}
        time_ratio = med["ours"]["median_step_s"] / med["TRL"]["median_step_s"]
        rss_ratio = med["ours"]["peak_rss_mb"] / med["TRL"]["peak_rss_mb"]
        res["medians"], res["ratios"] = med, {"time": time_ratio, "peak_rss": rss_ratio}
        rows.append([name, f"{med['TRL']['median_step_s']:.3f}", f"{med['ours']['median_step_s']:.3f}",
                     f"{time_ratio:.2f}x (target <= {TIME_TARGETS[name]}: {C.verdict(time_ratio, TIME_TARGETS[name])})",
                     f"{med['TRL']['tokens_per_s']:.0f}", f"{med['ours']['tokens_per_s']:.0f}",
                     f"{med['ours']['tokens_per_s'] / med['TRL']['tokens_per_s']:.2f}x",
                     f"{med['TRL']['peak_rss_mb']:.0f}", f"{med['ours']['peak_rss_mb']:.0f}",
                     f"{rss_ratio:.2f}x (target <= 1.00: {C.verdict(rss_ratio, 1.0)})"])
    print(C.md_table(["workload", "TRL s/step", "ours s/step", "time ours/TRL", "TRL gen tok/s", "ours gen tok/s",
                      "tok/s ours/TRL", "TRL peak RSS MiB", "ours peak RSS MiB", "RSS ours/TRL"], rows))
    print("\n(medians over rounds of each run's median step time / tokens/s / peak RSS)")
    for name, res in results.items():
        ours = res["runs"]["ours"]
        phases = ", ".join(f"{p} {C.median([r[f'{p}_s'] for r in ours]):.3f} s" for p in C.PHASES)
        trl_gen = C.median([r["generation_fraction"] for r in res["runs"]["TRL"]])
        print(f"{name}: our phases (median) {phases}; TRL generation {100 * trl_gen:.0f}% of its step")
    C.write_json(args.json_out, {"argv": sys.argv, "results": results})


if __name__ == "__main__":
    main()
