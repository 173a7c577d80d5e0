"""Tiny rule rewards for demos and tests: learnable by a random model within a few dozen steps."""

from __future__ import annotations

import re


def char_share(completions: list[str], target: str) -> list[float]:
    """The share of characters of each completion equal to ``target`` (0 for an empty completion)."""
    return [c.count(target) / len(c) if c else 0.0 for c in completions]


def target_char_share(completions: list[str], **_: object) -> list[float]:
    """TRL-style reward: the share of ``a`` in each completion. (The character is not a parameter: reward
    functions are called with keywords, so a prompt column named like it would take its place.)"""
    return char_share(completions, "a")


def leading_match(pattern: re.Pattern[str], completions: list[str], answers: list[str]) -> list[float]:
    """1.0 for each completion whose leading match of ``pattern`` is exactly its answer, else 0.0: text after
    the answer is ignored, but a longer run (an extra digit, an extra role) is wrong."""
    scores = []
    for completion, expected in zip(completions, answers):
        match = pattern.match(completion)
        scores.append(1.0 if match is not None and match.group() == str(expected).strip() else 0.0)
    return scores


_DIGITS = re.compile(r"\d+")


def leading_integer(prompts: list[str], completions: list[str], answer: list[str], **_: object) -> list[float]:
    """1.0 when the run of digits at the very start of the completion equals ``answer``, else 0.0."""
    return leading_match(_DIGITS, completions, answer)


_INTEGER = re.compile(r"-?\d+")


def last_integer(prompts: list[str], completions: list[str], answer: list[str], **_: object) -> list[float]:
    """1.0 when the last integer written in the completion equals ``answer``, else 0.0: a chat model may
    explain first ("7 + 5 = 12"), but a response cut off mid-sentence, or ending on another number, fails."""
    scores = []
    for completion, expected in zip(completions, answer):
        found = _INTEGER.findall(completion.replace(",", ""))
        scores.append(1.0 if found and int(found[-1]) == int(str(expected).strip()) else 0.0)
    return scores
