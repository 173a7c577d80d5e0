"""Final-answer extraction and equivalence grading for math completions.

Layers (see shared/research/offline_tasks.md, section 2.4):

1. :func:`extract_answer` takes the last ``\\boxed{...}``/``\\fbox{...}`` (brace-matched), else GSM8K's
   ``#### <answer>``, else the last ``Answer: ...``.
2. :func:`normalize_number` canonicalises plain numbers (thousands commas, ``$``, trailing period);
   when both sides are plain numbers they are compared exactly with :class:`fractions.Fraction`.
3. Everything else goes to ``math-verify`` (``parse``/``verify``), which handles ``\\frac``, sets, intervals
   and symbolic equivalence. Its timeouts use ``signal.alarm``, which only works in a main thread, so it runs
   in the main thread of worker *processes* (:class:`VerifierPool`) with an outer per-item deadline: a worker
   that overruns is killed and replaced, and the item is graded False and counted. A run never hangs.

:func:`math_reward` wraps it all in TRL's reward convention (``answer`` is the reference column).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from fractions import Fraction
from multiprocessing.connection import wait
from typing import Any

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------- extraction

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_HASHES = re.compile(r"####\s*([^\n]*)")
_ANSWER_LINE = re.compile(r"answer\s*:\s*([^\n]*)", re.IGNORECASE)


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed``/``\\fbox`` in ``text`` (balanced braces), or None."""
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    while start >= 0:
        cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
        rest = text[start + len(cmd):]
        if rest.startswith("{"):
            depth = 0
            for i, ch in enumerate(rest):
                depth += (ch == "{") - (ch == "}")
                if depth == 0:
                    return rest[1:i].strip()
        elif rest.startswith(" "):
            # Hendrycks' "\boxed 5" form: the token up to the next space or "$".
            token = re.match(r" +([^\s$]+)", rest)
            if token:
                return token.group(1)
        # Unclosed or empty box: try an earlier one rather than give up (the tail may be truncated).
        start = max(text.rfind(cmd, 0, start) for cmd in _BOX_COMMANDS)
    return None


def _clean_tail(answer: str) -> str:
    # Markdown emphasis around a final answer ("**Answer:** 5**") carries no meaning.
    return answer.strip().strip("*").strip()


def extract_answer(completion: str) -> str | None:
    """The final answer of ``completion``: last ``\\boxed{}``, else ``#### x``, else ``Answer: x``; else None."""
    boxed = _last_boxed(completion)
    if boxed:
        return boxed
    for pattern in (_HASHES, _ANSWER_LINE):
        found = [_clean_tail(m) for m in pattern.findall(completion)]
        found = [f for f in found if f]
        if found:
            return found[-1]
    return None


# ------------------------------------------------------------------------------------------ plain numbers

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)(/\d+)?")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")


def normalize_number(text: str) -> str | None:
    """Canonical form of a plain number (``"1,234.50$"`` -> ``"1234.5"``, ``"1/2"`` -> ``"1/2"``), else None.

    Only trivially safe decorations are removed: surrounding ``$``/``\\$``, a trailing period, thousands
    commas (``1,234`` but not ``1,2``, which may be a tuple), LaTeX thin spaces. Units, ``%`` and words are
    kept, so ``"5 cm"`` is not a plain number and goes to math-verify.
    """
    s = text.strip()
    for junk in ("\\$", "$", "\\!", "\\,", "{,}"):
        s = s.replace(junk, "" if junk != "{,}" else ",")
    s = s.strip().rstrip(".").strip()
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if not _NUMBER.fullmatch(s):
        return None
    value = _to_fraction(s)
    if value is None:
        return None
    return str(value.numerator) if value.denominator == 1 else _canonical(s, value)


def _canonical(s: str, value: Fraction) -> str:
    if "/" in s:
        return f"{value.numerator}/{value.denominator}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def _to_fraction(s: str) -> Fraction | None:
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None  # "1/0" is not a number


def _plain_value(text: str) -> Fraction | None:
    norm = normalize_number(text)
    return None if norm is None else _to_fraction(norm)


# ------------------------------------------------------------------------------------------ worker process

# Workers are plain ``python -c`` subprocesses speaking JSON lines on stdin/stdout. Not multiprocessing:
# spawn/forkserver children re-import the caller's ``__main__`` (an unguarded user script would run again)
# and importing ``reinforcepp.rewards`` pulls in torch; this source needs only math-verify (~0.6 s).
_WORKER_SOURCE = r"""
import json, os, sys, time

# Keep stdout for the protocol; anything printed by libraries goes to stderr.
out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)

def verify_pair(pred, gold, inner_timeout):
    # Runs in the worker's main thread, so math-verify's SIGALRM timeouts work.
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    # Wrapping in \boxed{} makes both the LaTeX and plain-expression extractors see exactly this answer.
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    gold_parsed = parse("\\boxed{" + gold + "}", extraction_config=config, parsing_timeout=inner_timeout)
    pred_parsed = parse("\\boxed{" + pred + "}", extraction_config=config, parsing_timeout=inner_timeout)
    if not gold_parsed or not pred_parsed:
        return False
    # Order matters: verify(gold, pred) is deliberately asymmetric (anti reward hacking).
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=inner_timeout))

OPS = {"verify": verify_pair, "sleep": time.sleep, "exit": os._exit}

try:
    import math_verify  # pay the import once, before the first item's deadline starts
except ImportError:
    pass  # reported per item, as a crash
out.write(json.dumps([True, "ready"]) + "\n"); out.flush()  # deadlines start after this
for line in sys.stdin:
    op, args = json.loads(line)
    try:
        reply = [True, OPS[op](*args)]
    except Exception as exc:  # any failure is a False grade, reported to the parent
        reply = [False, type(exc).__name__ + ": " + str(exc)]
    out.write(json.dumps(reply) + "\n"); out.flush()
"""
OPS = ("verify", "sleep", "exit")
"""Worker operations: ``verify(pred, gold, inner_timeout)``; ``sleep``/``exit`` exist to test the deadlines."""


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-c", _WORKER_SOURCE],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        self.ready = False

    def fileno(self) -> int:  # lets multiprocessing.connection.wait select on the worker
        return self.proc.stdout.fileno()

    def send(self, op: str, args: tuple) -> None:
        self.proc.stdin.write((json.dumps([op, list(args)]) + "\n").encode())
        self.proc.stdin.flush()

    def recv(self) -> list:
        """One reply (called once select says it is readable; replies are single short lines)."""
        line = self.proc.stdout.readline()
        if not line:
            raise EOFError(f"worker exited with code {self.proc.poll()}")
        return json.loads(line)

    def wait_ready(self, timeout: float) -> bool:
        """Block until the worker has imported math-verify (at most ``timeout`` seconds)."""
        if not self.ready and wait([self], timeout):
            try:
                self.ready = self.recv() == [True, "ready"]
            except (EOFError, OSError, ValueError):
                return False
        return self.ready

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass  # a broken pipe to a dead worker


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


TIMEOUT = _Marker("TIMEOUT")
"""Marker returned by :meth:`VerifierPool.run` for an item that overran its deadline."""
CRASH = _Marker("CRASH")
"""Marker returned by :meth:`VerifierPool.run` for an item whose worker died or raised."""


class VerifierPool:
    """A few long-lived worker processes with a hard per-item deadline.

    Workers start lazily (only as many as there are items) and are reused; an overrunning or dead
    worker is killed and replaced. ``stats`` counts ``items``, ``timeouts`` and ``crashes``.
    Not thread-safe by itself; :func:`default_pool` users are serialised by a lock.
    """

    def __init__(
        self, workers: int | None = None, timeout: float = 10.0, startup_timeout: float = 60.0
    ):
        if timeout <= 0:
            raise ValueError(f"VerifierPool: timeout must be > 0 seconds, got {timeout}")
        self.max_workers = workers or max(1, min(4, (os.cpu_count() or 2) // 2))
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self._workers: list[_Worker] = []
        self.stats = {"items": 0, "timeouts": 0, "crashes": 0}
        self.last_errors: deque[str] = deque(maxlen=20)

    def run(self, op: str, arg_tuples: Sequence[tuple], timeout: float | None = None) -> list[Any]:
        """``[op(*args) for args in arg_tuples]`` in the workers; an item gives TIMEOUT or CRASH on failure.

        ``op`` is one of :data:`OPS`. The deadline (``timeout`` or the
        pool's) starts when the item is handed to a ready worker, so neither queueing nor
        worker start-up eats into it.
        """
        if op not in OPS:
            raise ValueError(f"VerifierPool.run: unknown op {op!r}; expected one of {OPS}")
        limit = self.timeout if timeout is None else timeout
        results: list[Any] = [CRASH] * len(arg_tuples)
        pending = deque(enumerate(arg_tuples))
        while len(self._workers) < min(self.max_workers, len(pending)):
            self._workers.append(_Worker())
        idle = list(self._workers)
        busy: dict[_Worker, tuple[_Worker, int, float]] = {}  # worker -> (itself, item index, deadline)
        failures_before = self.stats["timeouts"] + self.stats["crashes"]
        while pending or busy:
            while idle and pending:
                worker = idle.pop()
                i, args = pending.popleft()
                if not worker.wait_ready(self.startup_timeout):
                    self._record(i, f"worker not ready within {self.startup_timeout}s", "crashes")
                    idle.append(self._replace(worker))
                    continue
                try:
                    worker.send(op, args)
                except (OSError, ValueError) as exc:  # died while idle
                    self._record(i, f"send failed: {exc}", "crashes")
                    idle.append(self._replace(worker))
                    continue
                busy[worker] = (worker, i, time.monotonic() + limit)
            if not busy:
                continue
            next_deadline = min(d for _, _, d in busy.values())
            for ready in wait(list(busy), timeout=max(0.0, next_deadline - time.monotonic())):
                worker, i, _ = busy.pop(ready)
                try:
                    ok, value = worker.recv()
                except (EOFError, OSError, ValueError) as exc:
                    self._record(i, f"worker died: {exc!r}", "crashes")
                    idle.append(self._replace(worker))
                    continue
                if ok:
                    results[i] = value
                else:
                    self._record(i, value, "crashes")
                idle.append(worker)
            now = time.monotonic()
            for key, (worker, i, deadline) in list(busy.items()):
                if now >= deadline:
                    del busy[key]
                    results[i] = TIMEOUT
                    self._record(i, f"no answer within {limit}s", "timeouts")
                    idle.append(self._replace(worker))
        self.stats["items"] += len(arg_tuples)
        failed = self.stats["timeouts"] + self.stats["crashes"] - failures_before
        if failed:  # one line per batch, not per item: a bad batch must not flood the log
            log.warning("math-verify: %d of %d items timed out or crashed (graded False); last: %s",
                        failed, len(arg_tuples), self.last_errors[-1])
        return results

    def _record(self, i: int, message: str, counter: str) -> None:
        self.stats[counter] += 1
        self.last_errors.append(f"item {i}: {message}")

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        fresh = _Worker()
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    def close(self) -> None:
        for worker in self._workers:
            worker.kill()
        self._workers.clear()


_DEFAULT_POOL: VerifierPool | None = None
_POOL_LOCK = threading.Lock()


def default_pool() -> VerifierPool:
    """The shared, lazily created pool (closed at interpreter exit)."""
    global _DEFAULT_POOL
    if _DEFAULT_POOL is None:
        _DEFAULT_POOL = VerifierPool()
        atexit.register(_DEFAULT_POOL.close)
    return _DEFAULT_POOL


# ------------------------------------------------------------------------------------------------- grading

INNER_TIMEOUT_S = 3
"""math-verify's own (SIGALRM) limit for parse/verify inside the worker; the pool's deadline backs it up."""


def grade_many(
    pairs: Sequence[tuple[str | None, str]],
    *,
    timeout: float | None = None,
    fast_path: bool = True,
    pool: VerifierPool | None = None,
) -> list[bool]:
    """Grade ``(completion_answer, reference)`` pairs; None or empty answers are False.

    Plain numbers on both sides are compared exactly here (``3`` == ``3.0``, ``1,000`` == ``1000``);
    the rest go to math-verify in the worker pool. A timeout or crash grades False (see ``pool.stats``).
    """
    grades = [False] * len(pairs)
    slow: list[int] = []
    for i, (pred, gold) in enumerate(pairs):
        if pred is None or not str(pred).strip():
            continue
        if gold is None or not str(gold).strip():
            raise ValueError(f"grade: reference {i} is empty ({gold!r}); cannot grade against nothing")
        if fast_path:
            p, g = _plain_value(str(pred)), _plain_value(str(gold))
            if p is not None and g is not None:
                grades[i] = p == g
                continue
        slow.append(i)
    if slow:
        if importlib.util.find_spec("math_verify") is None:
            raise ImportError(
                "grade: math-verify is needed for non-numeric answers; install it with "
                "pip install 'math-verify[antlr4_13_2]' (or pass plain numbers only)"
            )
        args = [(str(pairs[i][0]), str(pairs[i][1]), INNER_TIMEOUT_S) for i in slow]
        with _POOL_LOCK:
            outcomes = (pool or default_pool()).run("verify", args, timeout=timeout)
        for i, outcome in zip(slow, outcomes):
            grades[i] = outcome is True
    return grades


def grade(completion_answer: str | None, reference: str, *, timeout: float | None = None, **kwargs) -> bool:
    """True when ``completion_answer`` is mathematically equivalent to ``reference``."""
    return grade_many([(completion_answer, reference)], timeout=timeout, **kwargs)[0]


def reference_answer(reference: str) -> str:
    """The gradable part of a reference: a full GSM8K solution gives what follows ``####``."""
    if "####" in reference or any(cmd in reference for cmd in _BOX_COMMANDS):
        return extract_answer(reference) or reference
    return reference


def _completion_text(completion: Any) -> str:
    # TRL conversational format: a list of messages; the last assistant turn holds the answer.
    if isinstance(completion, list):
        return str(completion[-1]["content"]) if completion else ""
    return str(completion)


def math_reward(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any], **_) -> list[float]:
    """TRL-style reward: 1.0 when the completion's final answer matches ``answer``, else 0.0."""
    if len(answer) != len(completions):
        raise ValueError(f"math_reward: {len(completions)} completions but {len(answer)} answers")
    pairs = [
        (extract_answer(_completion_text(c)), reference_answer(str(a)))
        for c, a in zip(completions, answer)
    ]
    return [1.0 if ok else 0.0 for ok in grade_many(pairs)]
