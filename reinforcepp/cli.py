"""The `reinforcepp` command line: one small function per subcommand."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from reinforcepp.config import Config, ConfigError, config_to_yaml, load_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reinforcepp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_config_command(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config or preset (default: schema defaults)")
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


def _add_config_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("config", help="print the fully resolved config as YAML")
    _add_config_arguments(parser)
    parser.set_defaults(run=_run_config)


def _run_config(args: argparse.Namespace) -> int:
    print(config_to_yaml(_load(args)), end="")
    return 0
