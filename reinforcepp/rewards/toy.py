"""Tiny rule rewards for demos and tests: learnable by a random model within a few dozen steps."""

from __future__ import annotations

import re


def target_char_share(prompts: list[str], completions: list[str], target: str = "a", **_: object) -> list[float]:
    """The share of characters of each completion equal to ``target`` (0 for an empty completion)."""
    return [c.count(target) / len(c) if c else 0.0 for c in completions]


def leading_integer(prompts: list[str], completions: list[str], answer: list[str], **_: object) -> list[float]:
    """1.0 when the run of digits at the very start of the completion equals ``answer``, else 0.0."""
    scores = []
    for completion, expected in zip(completions, answer):
        match = re.match(r"\d+", completion)
        scores.append(1.0 if match is not None and match.group() == str(expected).strip() else 0.0)
    return scores
