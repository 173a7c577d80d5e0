"""Two-number addition, ``"17+72="`` -> ``"89"``: the tiny demo job's task (and the peer benchmark's).

Every pair (a, b) with 0 <= a, b <= max_operand appears once; a seeded shuffle puts ``held_out`` pairs
aside, so no held-out prompt is ever trained on, by SFT or by RL. Rows carry ``answer`` (for the
reward) and ``response`` (the SFT target, the same digits).
"""

from __future__ import annotations

import random


def addition_row(a: int, b: int) -> dict[str, str]:
    return {"prompt": f"{a}+{b}=", "answer": str(a + b), "response": str(a + b)}


def split_pairs(max_operand: int = 99, held_out: int = 256, seed: int = 0) -> tuple[list[tuple], list[tuple]]:
    """(training pairs, held-out pairs): every (a, b) once, ``held_out`` of them set aside at random."""
    pairs = [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]
    if not 0 < held_out < len(pairs):
        raise ValueError(f"split_pairs: held_out must be in 1..{len(pairs) - 1}, got {held_out}")
    random.Random(seed).shuffle(pairs)
    return pairs[held_out:], pairs[:held_out]


def addition_splits(max_operand: int = 99, held_out: int = 256, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows) of :func:`split_pairs`, as ``"17+72="`` prompts."""
    train, held = split_pairs(max_operand, held_out, seed)
    return [addition_row(a, b) for a, b in train], [addition_row(a, b) for a, b in held]


QUESTION = "What is {a} + {b}? Answer with the number only."
"""The chat models' form of the question (SmolLM2 demo): they explain first unless asked not to."""


def question_splits(max_operand: int = 9, held_out: int = 40, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows) of :func:`split_pairs` as :data:`QUESTION` prompts with ``answer``."""
    train, held = split_pairs(max_operand, held_out, seed)
    row = lambda a, b: {"prompt": QUESTION.format(a=a, b=b), "answer": str(a + b)}  # noqa: E731
    return [row(a, b) for a, b in train], [row(a, b) for a, b in held]


def with_noisy_responses(rows: list[dict], rate: float, seed: int = 0) -> list[dict]:
    """Copies of ``rows`` in which a ``rate`` share of SFT targets has one digit replaced by another: noisy
    demonstrations. The ``answer`` (what the reward checks) stays right."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"with_noisy_responses: rate must be in [0, 1), got {rate}")
    rng = random.Random(seed)
    noisy = []
    for row in rows:
        response = row["response"]
        if rng.random() < rate:
            i = rng.randrange(len(response))
            digit = rng.choice([d for d in "0123456789" if d != response[i]])
            response = response[:i] + digit + response[i + 1:]
        noisy.append({**row, "response": response})
    return noisy
