"""Reward functions over HTTP, standard library only.

Server: ``RewardServer(fn_or_spec)`` serves a reward function written for TRL, calling it as
``score_completions`` does locally: with keywords only (``prompts``, ``completions``, ``completion_ids``
when the request has them, and every column by its name; a function without ``**kwargs`` gets only the
keywords it names):

* ``POST /score`` with ``{"prompts": [str, ...], "completions": [str, ...], "completion_ids": [[int, ...], ...],
  "columns": {name: [...]}}`` answers ``{"rewards": [float | null, ...]}`` (``null`` = skip this sample).
  Every list holds one entry per completion. ``completion_ids`` (each completion's token ids) and
  ``columns`` are optional, so the older body without ``completion_ids`` is still accepted; a function
  that requires a keyword the request lacks then answers 400 naming it;
* ``GET /health`` answers ``{"status": "ok"}``;
* a failing function answers 500 ``{"error": "..."}`` naming the sample (via ``score_completions``);
  a bad request answers 400 ``{"error": "..."}``.

Client: ``RemoteRewardFunction(url)`` is a TRL-style reward function (keywords, ``**kwargs``) that sends
the batch in chunks, with ``completion_ids`` when it is given them (servers older than that field
answer 400 to it), retries connection errors, timeouts and 5xx answers without an error message
(exponential backoff), and raises ``RewardError`` with a clear message otherwise. It is modelled on
OpenRLHF's HTTP reward model (POST JSON, timeout, retries), with this project's request format.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .function import (
    TRL_ONLY_KEYWORDS,
    RewardError,
    RewardFn,
    RewardSignatureError,
    load_reward_function,
    score_completions,
)

__all__ = ["RemoteRewardFunction", "RewardServer", "remote_reward", "reward_from_env"]

MAX_BODY_BYTES = 256 * 1024 * 1024
URL_ENV = "REINFORCEPP_REWARD_URL"


class _BadRequest(ValueError):
    pass


@dataclass
class _Request:
    prompts: list[str]
    completions: list[str]
    columns: dict[str, list[Any]]
    completion_ids: list[list[int]] | None


_FIELDS = ("prompts", "completions", "completion_ids", "columns")


def _are_token_ids(value: Any, n: int) -> bool:
    """``value`` is ``n`` lists of integer token ids."""
    return isinstance(value, list) and len(value) == n and all(
        isinstance(ids, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in ids) for ids in value
    )


def _parse_request(body: bytes) -> _Request:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _BadRequest('request body must be a JSON object {"prompts": [...], "completions": [...], "columns": {...}}')
    unknown = set(data) - set(_FIELDS)
    if unknown:
        raise _BadRequest(f"unknown request fields {sorted(unknown)}; expected {', '.join(_FIELDS)}")
    prompts, completions = data.get("prompts"), data.get("completions")
    columns, completion_ids = data.get("columns") or {}, data.get("completion_ids")
    for name, value in (("prompts", prompts), ("completions", completions)):
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise _BadRequest(f"'{name}' must be a list of strings")
    if len(prompts) != len(completions):
        raise _BadRequest(f"{len(prompts)} prompts but {len(completions)} completions")
    if completion_ids is not None and not _are_token_ids(completion_ids, len(completions)):
        raise _BadRequest(f"'completion_ids' must be a list of {len(completions)} lists of token ids (integers)")
    if not isinstance(columns, dict):
        raise _BadRequest("'columns' must be an object {name: [one value per completion]}")
    for name, value in columns.items():
        if not isinstance(value, list) or len(value) != len(completions):
            got = f"{len(value)} values" if isinstance(value, list) else type(value).__name__
            raise _BadRequest(f"column {name!r} must be a list of {len(completions)} values, got {got}")
    return _Request(prompts, completions, columns, completion_ids)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: a client may reuse the connection

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        if self.server.verbose:
            super().log_message(format, *args)

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, allow_nan=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") == "/health":
            self._reply(200, {"status": "ok"})
        else:
            self._reply(404, {"error": f"no such endpoint {self.path!r}; use POST /score or GET /health"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path.rstrip("/") != "/score":
            self._reply(404, {"error": f"no such endpoint {self.path!r}; use POST /score or GET /health"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._reply(411, {"error": "Content-Length header required"})
            return
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._reply(413, {"error": f"request body of {length} bytes exceeds {MAX_BODY_BYTES}"})
            return
        body = self.rfile.read(length)
        self.server.requests += 1
        try:
            request = _parse_request(body)
            scores = score_completions(self.server.fn, request.prompts, request.completions, request.columns,
                                       completion_ids=request.completion_ids, timeout=self.server.fn_timeout)
        except (_BadRequest, RewardSignatureError) as exc:  # the request lacks what the function needs
            self._reply(400, {"error": str(exc)})
            return
        except Exception as exc:  # RewardError names the sample; anything else is still reported
            self._reply(500, {"error": str(exc) if isinstance(exc, RewardError) else repr(exc)})
            return
        self._reply(200, {"rewards": [None if math.isnan(s) else s for s in scores]})


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung reward function does not block shutdown
    fn: RewardFn
    fn_timeout: float | None
    verbose: bool
    requests: int

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is normal; report anything else as usual.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class RewardServer:
    """Serve a reward function over HTTP (``POST /score``, ``GET /health``).

    ``function`` is a callable or a spec for ``load_reward_function`` (``'file.py:name'``,
    ``'package.module:name'``). ``timeout`` bounds each call of the function (``None``: no bound).
    """

    def __init__(self, function: RewardFn | str, *, timeout: float | None = None, verbose: bool = False):
        self.fn: RewardFn = load_reward_function(function)
        self.timeout = timeout
        self.verbose = verbose
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def _bind(self, host: str, port: int) -> _Server:
        if self._httpd is not None:
            raise RuntimeError("RewardServer is already serving")
        httpd = _Server((host, port), _Handler)
        httpd.fn, httpd.fn_timeout, httpd.verbose, httpd.requests = self.fn, self.timeout, self.verbose, 0
        self._httpd = httpd
        return httpd

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("RewardServer is not serving")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self._httpd.server_address[0] if self._httpd else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def requests(self) -> int:
        """How many POST /score requests this server has received (for tests and logs)."""
        return self._httpd.requests if self._httpd else 0

    def serve(self, host: str = "127.0.0.1", port: int = 8000, *, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until ``shutdown()`` (from another thread) or KeyboardInterrupt."""
        httpd = self._bind(host, port)
        if on_ready is not None:
            on_ready(self.url)
        try:
            httpd.serve_forever(poll_interval=0.1)
        finally:
            httpd.server_close()

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve from a daemon thread; returns the bound port (``port=0``: a free one)."""
        httpd = self._bind(host, port)
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="reward-server", daemon=True
        )
        self._thread.start()
        return self.port

    def shutdown(self) -> None:
        """Stop serving and close the socket (safe to call twice)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        if self._thread is not None:
            httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        else:  # serve() in another thread
            httpd.shutdown()
        httpd.server_close()

    def __enter__(self) -> RewardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _score_url(url: str) -> str:
    """``http://host:port`` and ``http://host:port/`` mean ``/score``; any other path is used as given."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RewardError(f"reward server URL must be http://host:port[/path], got {url!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/score")
    return urllib.parse.urlunsplit(parts)


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, (TimeoutError, socket.timeout)) or isinstance(getattr(exc, "reason", None), (TimeoutError, socket.timeout))


def _error_message(exc: urllib.error.HTTPError) -> str | None:
    """The server's ``{"error": ...}`` message, if the body has one."""
    try:
        payload = json.loads(exc.read() or b"null")
    except Exception:
        return None
    return str(payload["error"]) if isinstance(payload, dict) and payload.get("error") else None


class RemoteRewardFunction:
    """A reward function (TRL's keywords) that asks a ``RewardServer`` (or anything speaking its protocol).

    ``url``: ``http://host:port`` (posts to ``/score``) or a full URL with a path. The batch goes in
    chunks of ``batch_size``. Connection errors, timeouts and 5xx answers without an error message are
    tried again up to ``retries`` more times, sleeping ``backoff * 2**k`` seconds in between. A server
    error message (500 with ``{"error": ...}``) or a 4xx answer is raised at once as ``RewardError``.
    """

    def __init__(self, url: str, *, batch_size: int = 64, timeout: float = 30.0, retries: int = 3, backoff: float = 0.5):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("retries and backoff must be >= 0 and timeout > 0")
        self.url = _score_url(url)
        self.batch_size, self.timeout, self.retries, self.backoff = batch_size, timeout, retries, backoff
        self.__name__ = f"remote_reward({url})"  # reward logs name functions by __name__

    def __repr__(self) -> str:
        return f"RemoteRewardFunction({self.url!r}, batch_size={self.batch_size}, timeout={self.timeout}, retries={self.retries})"

    def __call__(self, prompts: list[str], completions: list[str], completion_ids: list[list[int]] | None = None,
                 **columns: Any) -> list[float | None]:
        prompts, completions = list(prompts), list(completions)
        if len(prompts) != len(completions):
            raise RewardError(f"{len(prompts)} prompts but {len(completions)} completions")
        # Under TRL's trainer this function also gets trainer_state, log_extra ...: not data, so not sent.
        columns = {k: list(v) for k, v in columns.items() if k not in TRL_ONLY_KEYWORDS}
        ids = None if completion_ids is None else [list(x) for x in completion_ids]
        rewards: list[float | None] = []
        for start in range(0, len(completions), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            body = {"prompts": prompts[chunk], "completions": completions[chunk],
                    "columns": {k: v[chunk] for k, v in columns.items()}}
            if ids is not None:
                body["completion_ids"] = ids[chunk]
            rewards.extend(self._post(body, start))
        return rewards

    def _post(self, body: dict[str, Any], start: int) -> list[float | None]:
        where = f"reward server at {self.url}"
        count = len(body["prompts"])
        span = f"samples {start}..{start + count - 1}"
        try:
            data = json.dumps(body, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise RewardError(f"{where}: cannot send {span} as JSON (columns must be JSON values): {exc}") from None
        request = urllib.request.Request(self.url, data=data, method="POST", headers={"Content-Type": "application/json"})
        tries = self.retries + 1
        last = ""
        for attempt in range(tries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                message = _error_message(exc)
                if 400 <= exc.code < 500:
                    raise RewardError(f"{where} rejected the request for {span} (HTTP {exc.code}): {message or exc.reason}") from None
                if message is not None:  # the function itself failed: retrying would fail the same way
                    raise RewardError(f"{where} failed on {span} (indices below are within that chunk): {message}") from None
                last = f"HTTP {exc.code} {exc.reason}"
                continue
            except Exception as exc:  # connection refused/reset, timeout, DNS ...
                if _is_timeout(exc):
                    last = f"no answer within {self.timeout} s"
                    continue
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, ConnectionRefusedError):
                    last = "connection refused"
                elif isinstance(reason, (OSError, urllib.error.URLError)) or isinstance(exc, OSError):
                    last = str(reason) or type(reason).__name__
                else:
                    raise RewardError(f"{where}: request for {span} failed: {exc!r}") from exc
                if isinstance(reason, socket.gaierror):  # unknown host: trying again will not help
                    raise RewardError(f"no reward server at {self.url}: {last}") from None
                continue
            return self._check(raw, count, where, span)
        if last.startswith("no answer"):
            raise RewardError(f"{where} timed out on {span} after {tries} tries: {last}")
        if last.startswith("HTTP"):
            raise RewardError(f"{where} failed on {span} after {tries} tries: {last}")
        raise RewardError(f"no reward server at {self.url} after {tries} tries: {last}")

    @staticmethod
    def _check(raw: bytes, n: int, where: str, span: str) -> list[float | None]:
        try:
            rewards = json.loads(raw)["rewards"]
        except Exception:
            raise RewardError(f'{where} answered {span} without {{"rewards": [...]}}: {raw[:200]!r}') from None
        if not isinstance(rewards, list) or len(rewards) != n:
            got = len(rewards) if isinstance(rewards, list) else type(rewards).__name__
            raise RewardError(f"{where} returned {got} rewards for {n} completions ({span})")
        for r in rewards:
            if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float))):
                raise RewardError(f"{where} returned reward {r!r} in {span}")
        return [None if r is None else float(r) for r in rewards]


def remote_reward(url: str, **options: Any) -> RemoteRewardFunction:
    """The reward function for a URL spec (``http://host:port[/path]``); options go to RemoteRewardFunction."""
    return RemoteRewardFunction(url, **options)


_env_clients: dict[str, RemoteRewardFunction] = {}


def reward_from_env(prompts: list[str], completions: list[str], completion_ids: list[list[int]] | None = None,
                    **columns: Any) -> list[float | None]:
    """Spec ``reinforcepp.rewards.remote:reward_from_env``: ask the server at ``$REINFORCEPP_REWARD_URL``.
    Works with today's ``load_reward_function`` (no URL specs needed)."""
    url = os.environ.get(URL_ENV)
    if not url:
        raise RewardError(f"reward function reinforcepp.rewards.remote:reward_from_env needs ${URL_ENV}=http://host:port")
    client = _env_clients.get(url) or _env_clients.setdefault(url, RemoteRewardFunction(url))
    return client(prompts, completions, completion_ids, **columns)
