"""``reinforcepp serve-reward --function SPEC [--host 127.0.0.1] [--port 8000]``: serve a reward function
over HTTP (POST /score, GET /health) for ``RemoteRewardFunction`` / a URL reward spec."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .function import RewardError


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="reinforcepp serve-reward", description=__doc__)
    parser.add_argument("--function", required=True, metavar="SPEC",
                        help="reward function: path/to/file.py[:name] or package.module[:name] (name defaults to reward_func)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S", help="bound on each function call (default none)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def run(args: argparse.Namespace) -> int:
    from .remote import RewardServer

    try:
        server = RewardServer(args.function, timeout=args.timeout, verbose=args.verbose)
    except RewardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        server.serve(args.host, args.port, on_ready=lambda url: print(f"serving reward {args.function} on {url}  (POST /score, GET /health)", flush=True))
    except OSError as exc:  # port in use, address not available
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
