"""User reward functions: fn(prompts, completions, **columns) -> one float per completion (TRL's convention)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import importlib.util
import inspect
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RewardFn = Callable[..., Sequence[float]]


class RewardError(RuntimeError):
    """A reward function failed or returned something unusable; the message names the sample."""


def load_reward_function(spec: str) -> RewardFn:
    """Load ``'path/to/file.py:name'`` or ``'package.module:name'`` (name defaults to ``reward_func``),
    or an ``http(s)://`` URL of a reward server (`reinforcepp serve-reward`)."""
    if spec.startswith(("http://", "https://")):
        from .remote import remote_reward

        return remote_reward(spec)
    target, _, name = spec.rpartition(":") if ":" in spec else (spec, "", "reward_func")
    name = name or "reward_func"
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise RewardError(f"reward.function: file not found: {path}")
        module_spec = importlib.util.spec_from_file_location(f"_reward_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise RewardError(f"reward.function: cannot import {target!r}: {exc}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise RewardError(f"reward.function: {target!r} has no callable {name!r}")
    return fn


def _call_now(fn: RewardFn, prompts: list[str], completions: list[str], columns: dict[str, list[Any]]) -> Any:
    out = fn(prompts, completions, **columns)
    return asyncio.run(out) if inspect.isawaitable(out) else out


def _call(fn, prompts, completions, columns, timeout: float | None) -> Any:
    """Call ``fn``; with a timeout it runs in a worker thread and a late answer raises TimeoutError.
    (A thread cannot be killed: a hung function keeps its thread, but the run is told at once.)"""
    if timeout is None:
        return _call_now(fn, prompts, completions, columns)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(_call_now, fn, prompts, completions, columns).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"no answer within {timeout} s") from None
    finally:
        pool.shutdown(wait=False)


def _describe(i: int, prompts: list[str], completions: list[str]) -> str:
    return f"sample {i} (prompt {prompts[i][:80]!r}, completion {completions[i][:80]!r})"


def score_completions(
    fn: RewardFn,
    prompts: list[str],
    completions: list[str],
    columns: dict[str, list[Any]],
    *,
    timeout: float | None = None,
) -> list[float]:
    """Call ``fn`` on the whole batch and check its answer; ``None`` means "skip this sample" and
    comes back as NaN (the loop leaves such samples out of the loss and the baselines).

    If the batched call raises or times out, each sample is retried alone to find and name the one
    that fails.
    """
    try:
        scores = _call(fn, prompts, completions, columns, timeout)
    except RewardError:
        raise  # already names its sample (a reward server's answer); retrying one by one would cost N calls
    except Exception as batch_exc:
        for i in range(len(prompts)):
            try:
                one = {k: v[i : i + 1] for k, v in columns.items()}
                _call(fn, prompts[i : i + 1], completions[i : i + 1], one, timeout)
            except Exception as exc:
                raise RewardError(f"reward function failed on {_describe(i, prompts, completions)}: {exc!r}") from exc
        raise RewardError(f"reward function failed on the batch: {batch_exc!r}") from batch_exc
    scores = list(scores)
    if len(scores) != len(prompts):
        raise RewardError(f"reward function returned {len(scores)} scores for {len(prompts)} completions")
    for i, s in enumerate(scores):
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s)):
            raise RewardError(f"reward function returned {s!r} for {_describe(i, prompts, completions)}")
    return [math.nan if s is None else float(s) for s in scores]
