"""``reinforcepp serve-reward --function SPEC [--host 127.0.0.1] [--port 8000]``: serve a reward function
over HTTP (POST /score, GET /health) for ``RemoteRewardFunction`` / a URL reward spec.

Idle, slow and oversized clients are bounded (``--idle-timeout``, ``--read-timeout``, ``--max-connections``,
``--max-body-mb``, ``--max-buffered-mb``); a non-loopback ``--host`` needs a bearer token, from
``--token-file`` or ``$REINFORCEPP_REWARD_TOKEN`` (the client sends the same variable). The server speaks
plain HTTP: across a network that is not trusted, put TLS in front of it (a reverse proxy, an SSH tunnel),
or the token can be read on the way."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .function import RewardError
from .http_server import MiB, Limits

_DEFAULTS = Limits()


def _positive(kind: type) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return parse


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="reinforcepp serve-reward", description=__doc__)
    parser.add_argument("--function", required=True, metavar="SPEC",
                        help="reward function: path/to/file.py[:name] or package.module[:name] (name defaults to reward_func)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; any other address needs a token)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S", help="bound on each function call (default none)")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token-file", metavar="FILE",
                       help="file holding the bearer token every request must carry (default: $REINFORCEPP_REWARD_TOKEN)")
    token.add_argument("--token", help="the bearer token itself (visible to every local user in ps: prefer --token-file)")
    parser.add_argument("--idle-timeout", type=_positive(float), default=_DEFAULTS.idle_timeout, metavar="S",
                        help=f"close a connection whose next request head has not arrived after S s (default {_DEFAULTS.idle_timeout:g})")
    parser.add_argument("--read-timeout", type=_positive(float), default=_DEFAULTS.read_timeout, metavar="S",
                        help=f"answer 408 to a body not received within S s (default {_DEFAULTS.read_timeout:g})")
    parser.add_argument("--max-connections", type=_positive(int), default=_DEFAULTS.max_connections, metavar="N",
                        help=f"connections open at once; one more gets 503 (default {_DEFAULTS.max_connections})")
    parser.add_argument("--workers", type=_positive(int), default=_DEFAULTS.workers, metavar="N",
                        help=f"threads calling the reward function (default {_DEFAULTS.workers})")
    parser.add_argument("--max-body-mb", type=_positive(float), default=_DEFAULTS.max_body_bytes / MiB, metavar="MB",
                        help=f"largest request body; larger gets 413 unread (default {_DEFAULTS.max_body_bytes // MiB})")
    parser.add_argument("--max-buffered-mb", type=_positive(float), default=_DEFAULTS.max_buffered_bytes / MiB, metavar="MB",
                        help="request bodies held at once; one that does not fit gets 503 unread "
                        f"(default {_DEFAULTS.max_buffered_bytes // MiB})")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def read_token(args: argparse.Namespace) -> str | None:
    """The bearer token: --token-file, --token, else $REINFORCEPP_REWARD_TOKEN; None when none is given."""
    from .remote import TOKEN_ENV

    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise RewardError(f"--token-file: cannot read {args.token_file}: {exc}") from None
        if not token:
            raise RewardError(f"--token-file: {args.token_file} is empty")
        return token
    if args.token:
        print("warning: --token is visible to every local user in ps; prefer --token-file or "
              f"${TOKEN_ENV}", file=sys.stderr)
        return args.token
    return os.environ.get(TOKEN_ENV) or None


def limits_from(args: argparse.Namespace) -> Limits:
    if args.max_buffered_mb < args.max_body_mb:
        raise ValueError(f"--max-buffered-mb ({args.max_buffered_mb:g}) must be at least --max-body-mb ({args.max_body_mb:g})")
    return Limits(idle_timeout=args.idle_timeout, read_timeout=args.read_timeout,
                  max_connections=args.max_connections, workers=args.workers,
                  max_body_bytes=int(args.max_body_mb * MiB), max_buffered_bytes=int(args.max_buffered_mb * MiB))


def run(args: argparse.Namespace) -> int:
    from .remote import RewardServer

    try:
        limits = limits_from(args)
    except ValueError as exc:  # e.g. --max-buffered-mb below --max-body-mb
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        server = RewardServer(args.function, timeout=args.timeout, verbose=args.verbose, token=read_token(args),
                              limits=limits)
        server.serve(args.host, args.port, on_ready=lambda url: print(f"serving reward {args.function} on {url}  (POST /score, GET /health)", flush=True))
    except RewardError as exc:  # a bad function or token, or no token for a non-loopback address: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
