"""Shape rewards, pure functions: a ``<think>`` format check and DAPO's soft overlong penalty."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_THINK = re.compile(r"\s*<think>(.*?)</think>(.*)", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def _text(completion: Any) -> str:
    # TRL conversational format: a list of messages; the last one is the model's turn.
    if isinstance(completion, list):
        return str(completion[-1]["content"]) if completion else ""
    return str(completion)


def is_think_format(completion: str, prompt: str = "") -> bool:
    """``<think>...</think>`` then a non-empty answer: free text, or exactly one ``<answer>...</answer>``.

    Chat templates that end the prompt with ``<think>`` (Qwen3, DeepSeek-R1) make the model start
    inside the thinking block, so the opening tag is then taken from the prompt.
    """
    if prompt.rstrip().endswith("<think>") and not completion.lstrip().startswith("<think>"):
        completion = "<think>" + completion
    match = _THINK.fullmatch(completion)
    if not match or "<think>" in match.group(1):
        return False
    tail = match.group(2).strip()
    if not tail:
        return False
    if "<answer>" in tail or "</answer>" in tail:
        answer = _ANSWER.fullmatch(tail)
        return bool(answer and answer.group(1).strip() and not any(t in answer.group(1) for t in _TAGS))
    return not any(t in tail for t in _TAGS)  # a stray second block is malformed


def think_format_reward(prompts: Sequence[Any], completions: Sequence[Any], **_) -> list[float]:
    """TRL-style reward: 1.0 per completion in ``<think>...</think>`` + answer format, else 0.0."""
    if prompts is not None and len(prompts) not in (0, len(completions)):
        raise ValueError(f"think_format_reward: {len(prompts)} prompts but {len(completions)} completions")
    prompt_texts = [_text(p) if isinstance(p, (str, list)) else "" for p in (prompts or [""] * len(completions))]
    return [1.0 if is_think_format(_text(c), p) else 0.0 for c, p in zip(completions, prompt_texts)]


def overlong_penalty(
    lengths: Sequence[int], max_new_tokens: int, buffer_len: int, factor: float = 1.0
) -> list[float]:
    """DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13), one value per completion length.

    With ``start = max_new_tokens - buffer_len`` and ``excess = length - start``::

        penalty = 0                                          if excess <= 0
        penalty = -min(excess, buffer_len) / buffer_len * factor   otherwise

    so it falls linearly from 0 at ``start`` to ``-factor`` at ``max_new_tokens`` and stays there beyond.
    """
    if not 0 < buffer_len <= max_new_tokens:
        raise ValueError(
            f"overlong_penalty: need 0 < buffer_len <= max_new_tokens, got {buffer_len} and {max_new_tokens}"
        )
    if factor < 0:
        raise ValueError(f"overlong_penalty: factor must be >= 0, got {factor}")
    start = max_new_tokens - buffer_len
    out = []
    for i, length in enumerate(lengths):
        if length < 0:
            raise ValueError(f"overlong_penalty: length {i} is negative ({length})")
        excess = length - start
        out.append(0.0 if excess <= 0 else -min(excess, buffer_len) / buffer_len * factor)
    return out
