"""User reward functions, called the way TRL's GRPOTrainer calls them: with keywords only.

A reward function gets ``prompts``, ``completions``, ``completion_ids`` (each completion's token ids,
EOS included) and every other column of the prompt rows by its name, one value per completion, and
returns one float per completion (``None``: skip that sample). It may list its parameters in any order
and take only the ones it names; with ``**kwargs`` it gets them all. TRL's trainer also passes
``trainer_state``, ``log_extra``, ``log_metric`` (and ``environments``); reinforcepp does not, so a
function that requires one of them is refused (one with a default keeps its default).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import importlib.util
import inspect
import math
import traceback
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

RewardFn = Callable[..., Sequence[float]]

PASSED_KEYWORDS = ("prompts", "completions", "completion_ids")
TRL_ONLY_KEYWORDS = ("trainer_state", "log_extra", "log_metric", "environments")
_BY_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class RewardError(RuntimeError):
    """A reward function failed or returned something unusable; the message names the sample."""


class RewardSignatureError(RewardError):
    """A reward function requires a keyword the call cannot supply (a column the prompts do not have)."""


def load_reward_function(spec: str | RewardFn) -> RewardFn:
    """Load ``'path/to/file.py:name'`` or ``'package.module:name'`` (name defaults to ``reward_func``),
    or an ``http(s)://`` URL of a reward server (`reinforcepp serve-reward`); a callable is returned as is."""
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise RewardError(f"reward.function: expected a spec string or a callable, got {type(spec).__name__}")
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
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise RewardError(f"reward.function: {import_failure(exc, str(path))}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise RewardError(f"reward.function: cannot import {target!r}: {exc}") from None
        except Exception as exc:
            raise RewardError(f"reward.function: {import_failure(exc, target)}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise RewardError(f"reward.function: {target!r} has no callable {name!r}")
    return fn


def import_failure(exc: Exception, source: str) -> str:
    """One line for a reward module that failed while being imported: where (file:line) and why."""
    if isinstance(exc, SyntaxError):
        return f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg}"
    # the deepest frame of the user's own file (a module path names no file: the deepest frame at all)
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if Path(f.filename).resolve() == Path(source).resolve()] or frames[-1:]
    where = f"{own[-1].filename}:{own[-1].lineno}" if own else source
    return f"{where}: raised {type(exc).__name__}: {exc} while being imported"


def function_name(fn: Callable) -> str:
    """``module:qualname`` of a callable (a loadable spec when it lives at the top of an importable module)."""
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__qualname__
    return f"{module}:{name}"


def reward_kwargs(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    columns: dict[str, Sequence[Any]],
    completion_ids: Sequence[Sequence[int]] | None = None,
) -> dict[str, list[Any]]:
    """Every keyword a reward function may take, each a list with one value per completion: the columns
    by name, then ``prompts``, ``completions`` and (when known) ``completion_ids``. A column with one of
    those three names is dropped, as TRL drops them, so the call never gets two values for a name."""
    kwargs = {name: list(values) for name, values in columns.items() if name not in PASSED_KEYWORDS}
    kwargs |= {"prompts": list(prompts), "completions": list(completions)}
    if completion_ids is not None:
        kwargs["completion_ids"] = [list(ids) for ids in completion_ids]
    return kwargs


def _parameters(fn: Callable) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # no readable signature (some builtins): pass everything, check nothing
        return None


def _takes_everything(parameters: list[inspect.Parameter] | None) -> bool:
    return parameters is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def select_kwargs(fn: Callable, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keywords ``fn`` takes: all of them with ``**kwargs``, else only those it names."""
    parameters = _parameters(fn)
    if _takes_everything(parameters):
        return kwargs
    named = {p.name for p in parameters if p.kind in _BY_KEYWORD}
    return {name: value for name, value in kwargs.items() if name in named}


def missing_parameters(fn: Callable, names: Collection[str]) -> list[str]:
    """Parameters of ``fn`` no call with the keywords ``names`` can fill: required ones not among them,
    and required positional-only ones (a keyword cannot fill those)."""
    required = [p for p in _parameters(fn) or [] if p.default is inspect.Parameter.empty]
    return [p.name for p in required
            if p.kind is inspect.Parameter.POSITIONAL_ONLY or (p.kind in _BY_KEYWORD and p.name not in names)]


def defaulted_parameters(fn: Callable, names: Collection[str]) -> list[str]:
    """Named parameters of ``fn`` that no keyword in ``names`` fills, so they keep their defaults (a
    misspelt column name then goes unnoticed: worth a warning)."""
    return [p.name for p in _parameters(fn) or []
            if p.kind in _BY_KEYWORD and p.default is not inspect.Parameter.empty and p.name not in names]


def _why_missing(fn: Callable, name: str) -> str:
    kinds = {p.name: p.kind for p in _parameters(fn) or []}
    if kinds.get(name) is inspect.Parameter.POSITIONAL_ONLY:
        return f"{name!r} (positional-only, but reward functions are called with keywords, as TRL calls them)"
    if name in TRL_ONLY_KEYWORDS:
        return f"{name!r} (TRL's trainer passes it, reinforcepp does not: give it a default)"
    return repr(name)


def signature_problem(fn: Callable, names: Collection[str], source: str) -> str | None:
    """One line naming the parameters of ``fn`` that the keywords ``names`` cannot fill (see
    ``missing_parameters``) and what is available instead; ``None`` when the call can be made.
    ``source`` names where the columns come from (a prompt file, a request)."""
    missing = missing_parameters(fn, names)
    if not missing:
        return None
    passed = [name for name in PASSED_KEYWORDS if name in names]
    columns = [name for name in names if name not in PASSED_KEYWORDS]
    return (f"reward function {function_name(fn)} needs {', '.join(_why_missing(fn, m) for m in missing)}, "
            f"but it can get only {', '.join(passed)} and the columns of {source}: {', '.join(columns) or '(none)'}")


def _call_now(fn: RewardFn, kwargs: dict[str, list[Any]]) -> Any:
    out = fn(**kwargs)
    return asyncio.run(out) if inspect.isawaitable(out) else out


def _call(fn: RewardFn, kwargs: dict[str, list[Any]], timeout: float | None) -> Any:
    """Call ``fn``; with a timeout it runs in a worker thread and a late answer raises TimeoutError.
    (A thread cannot be killed: a hung function keeps its thread, but the run is told at once.)"""
    if timeout is None:
        return _call_now(fn, kwargs)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(_call_now, fn, kwargs).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"no answer within {timeout} s") from None
    finally:
        pool.shutdown(wait=False)


def _describe(i: int, prompts: Sequence[Any], completions: Sequence[Any]) -> str:
    return f"sample {i} (prompt {str(prompts[i])[:80]!r}, completion {str(completions[i])[:80]!r})"


def score_completions(
    fn: RewardFn,
    prompts: Sequence[Any],
    completions: Sequence[Any],
    columns: dict[str, Sequence[Any]],
    *,
    completion_ids: Sequence[Sequence[int]] | None = None,
    timeout: float | None = None,
) -> list[float]:
    """Call ``fn`` on the whole batch with keywords (``reward_kwargs``) and check its answer; ``None``
    means "skip this sample" and comes back as NaN (the loop leaves such samples out of the loss and
    the baselines).

    A function that requires a keyword this batch does not have raises ``RewardSignatureError``. If the
    batched call raises or times out, each sample is retried alone to find and name the one that fails.
    """
    kwargs = reward_kwargs(prompts, completions, columns, completion_ids)
    problem = signature_problem(fn, kwargs, "this batch")
    if problem is not None:
        raise RewardSignatureError(problem)
    kwargs = select_kwargs(fn, kwargs)
    try:
        scores = _call(fn, kwargs, timeout)
    except RewardError:
        raise  # already names its sample (a reward server's answer); retrying one by one would cost N calls
    except Exception as batch_exc:
        for i in range(len(prompts)):
            try:
                _call(fn, {name: values[i : i + 1] for name, values in kwargs.items()}, timeout)
            except Exception as exc:
                failed = f"reward function {function_name(fn)} failed on {_describe(i, prompts, completions)}"
                raise RewardError(f"{failed}: {exc!r}") from exc
        raise RewardError(f"reward function {function_name(fn)} failed on the batch: {batch_exc!r}") from batch_exc
    scores = checked_score_list(fn, scores, len(prompts))
    for i, s in enumerate(scores):
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s)):
            raise RewardError(f"reward function {function_name(fn)} returned {_short(s)} for "
                              f"{_describe(i, prompts, completions)}; expected a finite float or None")
    return [math.nan if s is None else float(s) for s in scores]


def checked_score_list(fn: Callable, scores: Any, expected: int) -> list[Any]:
    """The reward function's answer as a list of ``expected`` entries; anything else (None, a number, a
    string, a mapping, a list of the wrong length) is a RewardError naming the function."""
    what = f"reward function {function_name(fn)}"
    wanted = f"expected a list of {expected} floats, one per completion (None skips a sample)"
    if scores is None or isinstance(scores, (str, bytes, dict)) or not isinstance(scores, Iterable):
        raise RewardError(f"{what} returned {_short(scores)} ({type(scores).__name__}); {wanted}")
    scores = list(scores)
    if len(scores) != expected:
        raise RewardError(f"{what} returned {len(scores)} scores for {expected} completions; {wanted}")
    return scores


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
