"""Tiny rule rewards for demos and tests: learnable by a random model within a few dozen steps."""

from __future__ import annotations


def target_char_share(prompts: list[str], completions: list[str], target: str = "a", **_: object) -> list[float]:
    """The share of characters of each completion equal to ``target`` (0 for an empty completion)."""
    return [c.count(target) / len(c) if c else 0.0 for c in completions]
