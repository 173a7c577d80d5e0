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
  a bad request answers 400 ``{"error": "..."}``;
* idle, slow, oversized and unauthenticated clients are bounded or refused before their body is read
  (``http_server``: 401, 408, 411, 413, 503); binding a non-loopback address needs a bearer token
  (``token``, from ``--token-file`` or ``$REINFORCEPP_REWARD_TOKEN``).

Client: ``RemoteRewardFunction(url)`` is a TRL-style reward function (keywords, ``**kwargs``) that sends
the batch in chunks, with ``completion_ids`` when it is given them (servers older than that field
answer 400 to it) with ``Authorization: Bearer $REINFORCEPP_REWARD_TOKEN`` when that is set, retries
connection errors, timeouts, 503 and 5xx answers without an error message (exponential backoff), and raises ``RewardError`` with a clear message otherwise. It is modelled on
OpenRLHF's HTTP reward model (POST JSON, timeout, retries), with this project's request format.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .function import (
    TRL_ONLY_KEYWORDS,
    RewardError,
    RewardFn,
    RewardSignatureError,
    load_reward_function,
    score_completions,
)
from .http_server import JsonServer, Limits, listening_socket

__all__ = ["RemoteRewardFunction", "RewardServer", "remote_reward", "reward_from_env"]

URL_ENV = "REINFORCEPP_REWARD_URL"
# The bearer token comes from the environment on both sides, never from a config file: the config is
# saved with every run and checkpoint, a command line is visible to every local user in ps.
TOKEN_ENV = "REINFORCEPP_REWARD_TOKEN"
MIN_TOKEN_CHARS = 16


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


def checked_token(token: str) -> str:
    """A bearer token fit for an HTTP header and not guessable by length alone."""
    if len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise RewardError(f"reward server token: must be at least {MIN_TOKEN_CHARS} printable ASCII characters without "
                          f"spaces (got {len(token)} characters); e.g. python -c 'import secrets; print(secrets.token_urlsafe())'")
    return token


def is_loopback(host: str) -> bool:
    """Every address ``host`` names is a loopback address (``''`` and ``0.0.0.0`` mean every interface: no)."""
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


class RewardServer:
    """Serve a reward function over HTTP (``POST /score``, ``GET /health``), under ``limits`` (see
    ``http_server``: timeouts, connection, body and memory bounds).

    ``function`` is a callable or a spec for ``load_reward_function`` (``'file.py:name'``,
    ``'package.module:name'``). ``timeout`` bounds each call of the function (``None``: no bound).
    ``token``: the bearer token every request must carry; required to bind a non-loopback address.
    """

    def __init__(self, function: RewardFn | str, *, timeout: float | None = None, verbose: bool = False,
                 token: str | None = None, limits: Limits | None = None):
        self.fn: RewardFn = load_reward_function(function)
        self.timeout = timeout
        self.verbose = verbose
        self.token = None if token is None else checked_token(token)
        self.limits = limits or Limits()
        self._server: JsonServer | None = None
        self._thread: threading.Thread | None = None
        self._requests = 0
        self._count_lock = threading.Lock()

    def _bind(self, host: str, port: int) -> JsonServer:
        if self._server is not None:
            raise RuntimeError("RewardServer is already serving")
        if self.token is None and not is_loopback(host):
            raise RewardError(f"serving on {host or 'every interface'!r} (not a loopback address) needs a bearer token: "
                              f"--token-file FILE or ${TOKEN_ENV}")
        routes = {("POST", "/score"): self._score, ("GET", "/health"): _health}
        self._server = JsonServer(listening_socket(host, port), routes, self.limits, self.token, self.verbose)
        return self._server

    def _score(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer one POST /score body (in a worker thread)."""
        with self._count_lock:
            self._requests += 1
        try:
            request = _parse_request(body)
            scores = score_completions(self.fn, request.prompts, request.completions, request.columns,
                                       completion_ids=request.completion_ids, timeout=self.timeout)
        except (_BadRequest, RewardSignatureError) as exc:  # the request lacks what the function needs
            return 400, {"error": str(exc)}
        except Exception as exc:  # RewardError names the sample; anything else is still reported
            return 500, {"error": str(exc) if isinstance(exc, RewardError) else repr(exc)}
        return 200, {"rewards": [None if math.isnan(s) else s for s in scores]}

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("RewardServer is not serving")
        return self._server.sock.getsockname()[1]

    @property
    def url(self) -> str:
        host = self._server.sock.getsockname()[0] if self._server else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def requests(self) -> int:
        """How many POST /score requests this server has received (for tests and logs)."""
        return self._requests

    def serve(self, host: str = "127.0.0.1", port: int = 8000, *, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until ``shutdown()`` (from another thread) or KeyboardInterrupt."""
        server = self._bind(host, port)
        if on_ready is not None:
            on_ready(self.url)
        server.serve_forever()

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve from a daemon thread; returns the bound port (``port=0``: a free one)."""
        server = self._bind(host, port)
        self._thread = threading.Thread(target=server.serve_forever, name="reward-server", daemon=True)
        self._thread.start()
        if not server.ready.wait(10):
            raise RuntimeError("the reward server did not start within 10 s")
        return self.port

    def shutdown(self) -> None:
        """Stop serving and close the socket (safe to call twice)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> RewardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _health(body: bytes) -> tuple[int, dict[str, Any]]:
    return 200, {"status": "ok"}


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
    tried again up to ``retries`` more times, sleeping ``backoff * 2**k`` seconds in between; so is 503
    (server busy). A server error message (500 with ``{"error": ...}``) or a 4xx answer is raised at once
    as ``RewardError``. ``token`` (default ``$REINFORCEPP_REWARD_TOKEN``): sent as ``Authorization: Bearer``.
    """

    def __init__(self, url: str, *, batch_size: int = 64, timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 token: str | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("retries and backoff must be >= 0 and timeout > 0")
        self.url = _score_url(url)
        self.batch_size, self.timeout, self.retries, self.backoff = batch_size, timeout, retries, backoff
        token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self._token = None if token is None else checked_token(token)  # never in repr, logs or errors
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
        headers = {"Content-Type": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.url, data=data, method="POST", headers=headers)
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
                if exc.code == 503:  # busy (too many connections or bytes held): worth another try
                    last = f"HTTP 503 {message or exc.reason}"
                    continue
                if exc.code == 401:
                    message = f"{message or exc.reason} (the client sends ${TOKEN_ENV} as its bearer token)"
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
