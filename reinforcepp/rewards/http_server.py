"""A small HTTP/1.1 JSON server that idle, slow or oversized clients cannot exhaust; standard library only.

One asyncio event loop does all socket I/O, so an idle or slow connection costs a socket and a few KB,
never a thread; a fixed pool of worker threads answers the complete requests. Every resource is bounded:

* the next request's head (request line and headers, at most 64 KiB) must arrive within ``idle_timeout``
  of the connection opening or of the previous answer, else the connection is closed (slowloris);
* its body must arrive within ``read_timeout`` (else 408 and close);
* the body length is checked before a byte of the body is read: ``Content-Length`` missing on a POST or
  a chunked body -> 411, negative, non-numeric or repeated with different values -> 400, over
  ``max_body_bytes`` -> 413; exactly that many bytes are then read, never more;
* bodies held at once (being read, waiting for a worker, being answered) total at most
  ``max_buffered_bytes``; a body that does not fit now gets 503 at once, unread;
* at most ``max_connections`` connections are open; one more gets 503 and is closed;
* with a bearer ``token`` every request must carry ``Authorization: Bearer <token>`` (else 401, unread).

A refused body is never held: what the client still sends is dropped as it arrives (for at most
``read_timeout``), so that a client that sends its whole body before reading sees the refusal, not a
reset. Memory therefore stays below ``max_buffered_bytes`` of held bodies, plus for each worker the
text and the parsed JSON of the body it answers (about twice the body), plus a few KB per connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import json
import queue
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

__all__ = ["HttpError", "JsonServer", "Limits", "body_length", "parse_head", "token_matches"]

MiB = 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024
# A burst of connections waits here to be accepted; the kernel caps it (net.core.somaxconn). A short
# queue makes the kernel drop connection attempts, and the client retries only after a second or more.
BACKLOG = socket.SOMAXCONN
LINGER_PAUSE = 2.0  # a refused client that stops sending for this long is closed
# A route answers a request body with (HTTP status, JSON payload); it runs in a worker thread.
Route = Callable[[bytes], "tuple[int, dict[str, Any]]"]


@dataclass(frozen=True)
class Limits:
    """Bounds on what clients may hold (see the module docstring)."""

    idle_timeout: float = 30.0
    read_timeout: float = 60.0
    max_connections: int = 512
    workers: int = 8
    max_body_bytes: int = 64 * MiB
    max_buffered_bytes: int = 128 * MiB

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "read_timeout", "max_connections", "workers", "max_body_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError(f"max_buffered_bytes ({self.max_buffered_bytes}) must be at least "
                             f"max_body_bytes ({self.max_body_bytes})")


class HttpError(Exception):
    """A request refused with ``status`` and a one-line ``message``; the connection is closed after it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Head:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    keep_alive: bool


def parse_head(raw: bytes) -> Head:
    """The request line and headers (``raw`` ends with the blank line); malformed -> HttpError 400."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, f"malformed request line {lines[0][:100]!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():  # also refuses obsolete folded lines
            raise HttpError(400, f"malformed header line {line[:100]!r}")
        name, value = name.lower(), value.strip()
        if name not in headers or name == "content-length" and headers[name] == value:
            headers[name] = value
        elif name == "content-length":
            raise HttpError(400, "conflicting Content-Length headers")
        else:  # a repeated header is one comma-separated list
            headers[name] = f"{headers[name]}, {value}"
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    path = target.split("?", 1)[0].rstrip("/") or "/"
    return Head(method, path, headers, keep_alive)


def body_length(headers: Mapping[str, str], max_body_bytes: int, *, required: bool) -> int:
    """The body's length from ``Content-Length``, checked before any of the body is read."""
    if "transfer-encoding" in headers:
        raise HttpError(411, "chunked request bodies are not accepted; send Content-Length")
    text = headers.get("content-length")
    if text is None:
        if required:
            raise HttpError(411, "Content-Length header required")
        return 0
    if not text.isdigit():  # also refuses -1, +5, 1e3 and spaces
        raise HttpError(400, f"Content-Length must be a non-negative integer, got {text[:40]!r}")
    length = int(text)
    if length > max_body_bytes:
        raise HttpError(413, f"request body of {length} bytes exceeds the limit of {max_body_bytes} bytes")
    return length


def token_matches(headers: Mapping[str, str], token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time (digests: the length does not leak)."""
    scheme, _, given = headers.get("authorization", "").partition(" ")
    digest = lambda text: hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()  # noqa: E731
    return scheme.lower() == "bearer" and hmac.compare_digest(digest(given.strip()), digest(token))


def response_bytes(status: int, payload: dict[str, Any], *, close: bool, extra: Mapping[str, str] = {}) -> bytes:
    body = json.dumps(payload, allow_nan=False).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **extra}
    if close:
        headers["Connection"] = "close"
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_body(reader: asyncio.StreamReader, length: int) -> bytearray:
    """Exactly ``length`` bytes, into one buffer (``readexactly`` holds them twice while it copies)."""
    body = bytearray(length)
    view, got = memoryview(body), 0
    while got < length:
        chunk = await reader.read(min(length - got, MAX_HEAD_BYTES))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", length)
        view[got : got + len(chunk)] = chunk
        got += len(chunk)
    return body


class _DaemonPool:
    """Fixed worker threads that never block interpreter exit (a hung reward function must not)."""

    def __init__(self, workers: int, name: str):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((future, fn, args))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the waiting request
                future.set_exception(exc)

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)


_TIMEOUTS = (asyncio.TimeoutError, TimeoutError)
_GONE = (ConnectionError, asyncio.IncompleteReadError, *_TIMEOUTS)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening (IPv4 or IPv6 as the host resolves); OSError if not."""
    family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


class JsonServer:
    """Serve ``routes`` ({(method, path): route}) on a bound socket under ``limits``; ``token``: the
    bearer token every request must carry (None: none needed)."""

    def __init__(self, sock: socket.socket, routes: Mapping[tuple[str, str], Route], limits: Limits,
                 token: str | None = None, verbose: bool = False):
        self.sock, self.routes, self.limits, self.token, self.verbose = sock, dict(routes), limits, token, verbose
        self.open_connections = 0
        self.buffered_bytes = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = False
        self._pool: _DaemonPool | None = None
        self.ready = threading.Event()

    # --- lifecycle -------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve from this thread until ``stop()`` (from any thread)."""
        pool = _DaemonPool(self.limits.workers, "reward-worker")
        try:
            asyncio.run(self._main(pool))
        finally:
            pool.close()
            self.sock.close()

    def stop(self) -> None:
        self._stopping = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop has already finished
                pass

    async def _main(self, pool: _DaemonPool) -> None:
        self._loop, self._stop, self._pool = asyncio.get_running_loop(), asyncio.Event(), pool
        server = await asyncio.start_server(self._connection, sock=self.sock, limit=MAX_HEAD_BYTES, backlog=BACKLOG)
        self.ready.set()
        if not self._stopping:
            await self._stop.wait()
        server.close()
        for writer in list(self._writers):  # open connections end with the server
            writer.transport.abort()

    # --- one connection --------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve_connection(reader, writer)
        except asyncio.CancelledError:  # the server stops: end quietly (asyncio logs a cancelled callback task)
            writer.transport.abort()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open_connections >= self.limits.max_connections:
            busy = {"error": f"server busy: {self.limits.max_connections} connections open; try again later"}
            writer.write(response_bytes(503, busy, close=True, extra={"Retry-After": "1"}))
            await self._discard(reader, writer, LINGER_PAUSE)  # not counted among the connections: short
            await self._close(writer)
            return
        self.open_connections += 1
        self._writers.add(writer)
        try:
            while await self._one_request(reader, writer):
                pass
        except _GONE:  # closed by the client, idle too long, or a client that does not read its answer
            pass
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            await self._close(writer)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        """Close after the answer is sent; a client that does not read it is cut off after idle_timeout."""
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), self.limits.idle_timeout)
        except (*_GONE, OSError):
            writer.transport.abort()

    async def _discard(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seconds: float) -> None:
        """After refusing a request whose body was not read: end our side, then read and drop what the
        client still sends (as nginx's lingering close does), so that a client that sends its whole body
        before reading gets the refusal, not a reset. Nothing is kept; it stops after ``seconds`` in all,
        or once the client pauses for LINGER_PAUSE seconds."""
        if writer.can_write_eof():
            writer.write_eof()
        deadline = asyncio.get_running_loop().time() + seconds
        try:
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                if not await asyncio.wait_for(reader.read(MAX_HEAD_BYTES), min(left, LINGER_PAUSE)):
                    return
        except (*_GONE, OSError):
            pass

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read and answer one request; True to keep the connection for another."""
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.limits.idle_timeout)
        except asyncio.LimitOverrunError:  # no end of headers within MAX_HEAD_BYTES
            await self._send(writer, None, 431, {"error": f"request head exceeds {MAX_HEAD_BYTES} bytes"}, close=True)
            return False
        head: Head | None = None
        try:
            head = parse_head(raw)
            route = self._route(head)
            length = body_length(head.headers, self.limits.max_body_bytes, required=head.method == "POST")
            self._reserve(length)
        except HttpError as exc:
            extra = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {"Retry-After": "1"} if exc.status == 503 else {}
            await self._send(writer, head, exc.status, {"error": exc.message}, close=True, extra=extra)
            await self._discard(reader, writer, self.limits.read_timeout)
            return False
        try:
            if head.headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                body = await asyncio.wait_for(read_body(reader, length), self.limits.read_timeout)
            except _TIMEOUTS:
                message = f"request body not received within {self.limits.read_timeout} s"
                await self._send(writer, head, 408, {"error": message}, close=True)
                return False
            status, payload = await asyncio.wrap_future(self._pool.submit(route, body))
        finally:
            self.buffered_bytes -= length
        await self._send(writer, head, status, payload, close=not head.keep_alive)
        return head.keep_alive

    def _route(self, head: Head) -> Route:
        """The route for ``head``, once its token is checked (401 before anything else is revealed)."""
        if self.token is not None and not token_matches(head.headers, self.token):
            raise HttpError(401, "missing or wrong bearer token")
        route = self.routes.get((head.method, head.path))
        if route is not None:
            return route
        known = ", ".join(f"{m} {p}" for m, p in self.routes)
        if any(p == head.path for _, p in self.routes):
            raise HttpError(405, f"method {head.method} not allowed on {head.path}; use {known}")
        raise HttpError(404, f"no such endpoint {head.path[:100]!r}; use {known}")

    def _reserve(self, length: int) -> None:
        if self.buffered_bytes + length > self.limits.max_buffered_bytes:
            raise HttpError(503, f"server busy: {self.buffered_bytes} bytes of requests held; try again later")
        self.buffered_bytes += length

    async def _send(self, writer: asyncio.StreamWriter, head: Head | None, status: int, payload: dict[str, Any],
                    *, close: bool, extra: Mapping[str, str] = {}) -> None:
        if self.verbose:
            peer = writer.get_extra_info("peername")
            what = f"{head.method} {head.path}" if head else "-"
            print(f"{peer[0] if peer else '-'} \"{what}\" {status}", file=sys.stderr, flush=True)
        writer.write(response_bytes(status, payload, close=close, extra=extra))
        await asyncio.wait_for(writer.drain(), self.limits.idle_timeout)
