"""Seedable arithmetic tasks: plain expressions and GSM8K-style word problems, integer answers.

Rows are ``{"prompt": str, "answer": "<integer>"}``; word problems also carry ``"solution"``, a worked
solution in GSM8K's style (``<<a*b=c>>`` calculator notes, last line ``#### N``). Both generators take a
seed and use their own ``random.Random``, so the same arguments always give the same rows.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from reinforcepp.data.prompts import write_jsonl

__all__ = ["TEMPLATES", "arithmetic_problem", "make_arithmetic", "make_word_problems", "write_jsonl"]

BOXED_SUFFIX = " Put your final answer in \\boxed{}."

# ------------------------------------------------------------------------------------------ plain arithmetic


def _evaluate(operands: list[int], operators: list[str]) -> int:
    """Evaluate with the usual precedence (``*`` before ``+``/``-``), left to right; no ``eval``."""
    terms = [operands[0]]
    signs = [1]
    for op, value in zip(operators, operands[1:]):
        if op == "*":
            terms[-1] *= value
        else:
            terms.append(value)
            signs.append(1 if op == "+" else -1)
    return sum(s * t for s, t in zip(signs, terms))


def arithmetic_problem(
    rng: random.Random, n_operands: int = 2, digits: int = 2, operators: str = "+-*", suffix: str = BOXED_SUFFIX
) -> dict[str, str]:
    """One expression of ``n_operands`` numbers with exactly ``digits`` digits each, joined by ``operators``."""
    if n_operands < 2:
        raise ValueError(f"arithmetic_problem: n_operands must be >= 2, got {n_operands}")
    if digits < 1:
        raise ValueError(f"arithmetic_problem: digits must be >= 1, got {digits}")
    if not operators or set(operators) - set("+-*"):
        raise ValueError(f"arithmetic_problem: operators must be a non-empty subset of '+-*', got {operators!r}")
    low = 0 if digits == 1 else 10 ** (digits - 1)  # exactly `digits` digits
    operands = [rng.randint(low, 10**digits - 1) for _ in range(n_operands)]
    ops = [rng.choice(operators) for _ in range(n_operands - 1)]
    expression = str(operands[0]) + "".join(f" {op} {value}" for op, value in zip(ops, operands[1:]))
    return {"prompt": f"What is {expression}?{suffix}", "answer": str(_evaluate(operands, ops))}


def make_arithmetic(
    n: int, seed: int = 0, n_operands: int = 2, digits: int = 2, operators: str = "+-*", suffix: str = BOXED_SUFFIX
) -> list[dict[str, str]]:
    """``n`` plain arithmetic rows; difficulty grows with ``n_operands`` and ``digits``."""
    rng = random.Random(seed)
    return [arithmetic_problem(rng, n_operands, digits, operators, suffix) for _ in range(n)]


# ------------------------------------------------------------------------------------------ word problems

_NAMES = [("Maya", "she"), ("Liam", "he"), ("Sofia", "she"), ("Noah", "he"), ("Aisha", "she"), ("Kenji", "he"),
          ("Elena", "she"), ("Omar", "he"), ("Priya", "she"), ("Lucas", "he")]
_ITEMS = ["apples", "pencils", "stickers", "cookies", "marbles", "cupcakes", "cards", "muffins"]
_THINGS = ["book", "backpack", "board game", "pair of shoes", "lamp", "kite"]

# A template returns (question, solution lines with <<calc>> notes, integer answer).
Template = Callable[[random.Random, str, str, str], tuple[str, list[str], int]]


def _packs(rng: random.Random, name: str, pronoun: str, item: str) -> tuple[str, list[str], int]:
    """2 steps: a*b - c."""
    a, b = rng.randint(2, 9), rng.randint(3, 12)
    total = a * b
    c = rng.randint(1, total - 1)
    q = (f"{name} buys {a} packs of {item} with {b} {item} in each pack. "
         f"{pronoun.capitalize()} gives away {c} {item}. How many {item} does {name} have left?")
    steps = [f"{name} buys {a} * {b} = <<{a}*{b}={total}>>{total} {item}.",
             f"{pronoun.capitalize()} has {total} - {c} = <<{total}-{c}={total - c}>>{total - c} {item} left."]
    return q, steps, total - c


def _sharing(rng: random.Random, name: str, pronoun: str, item: str) -> tuple[str, list[str], int]:
    """2 steps: (a*b) / k with an exact quotient."""
    a, k, m = rng.randint(2, 6), rng.randint(2, 6), rng.randint(1, 5)
    b = k * m  # guarantees a*b divisible by k
    total = a * b
    q = (f"{name} bakes {a} trays of {item} with {b} {item} on each tray. "
         f"{pronoun.capitalize()} shares them equally among {k} friends. How many {item} does each friend get?")
    steps = [f"There are {a} * {b} = <<{a}*{b}={total}>>{total} {item}.",
             f"Each friend gets {total} / {k} = <<{total}/{k}={total // k}>>{total // k} {item}."]
    return q, steps, total // k


def _sales(rng: random.Random, name: str, pronoun: str, item: str) -> tuple[str, list[str], int]:
    """3 steps: (a + (a + b)) * p."""
    a, b, p = rng.randint(5, 30), rng.randint(2, 15), rng.randint(2, 9)
    tuesday, both = a + b, 2 * a + b
    q = (f"{name} sells {a} {item} on Monday and {b} more {item} on Tuesday than on Monday. "
         f"Each one sells for ${p}. How many dollars does {name} earn in total?")
    steps = [f"On Tuesday {pronoun} sells {a} + {b} = <<{a}+{b}={tuesday}>>{tuesday} {item}.",
             f"Altogether {pronoun} sells {a} + {tuesday} = <<{a}+{tuesday}={both}>>{both} {item}.",
             f"{pronoun.capitalize()} earns {both} * {p} = <<{both}*{p}={both * p}>>{both * p} dollars."]
    return q, steps, both * p


def _savings(rng: random.Random, name: str, pronoun: str, item: str) -> tuple[str, list[str], int]:
    """4 steps: s = a*w; r = s - c; half of r is spent; r - r/2 is left."""
    a, w = rng.randint(5, 25), rng.randint(3, 10)
    saved = a * w
    c = rng.randint(1, saved - 2)
    if (saved - c) % 2:  # keep "half of what is left" an integer
        c += 1
    rest, half = saved - c, (saved - c) // 2
    thing = rng.choice(_THINGS)
    q = (f"{name} saves ${a} every week for {w} weeks. Then {pronoun} spends ${c} on a {thing} "
         f"and half of the remaining money on {item}. How many dollars does {name} have left?")
    steps = [f"{name} saves {a} * {w} = <<{a}*{w}={saved}>>{saved} dollars.",
             f"After the {thing} {pronoun} has {saved} - {c} = <<{saved}-{c}={rest}>>{rest} dollars.",
             f"{pronoun.capitalize()} spends {rest} / 2 = <<{rest}/2={half}>>{half} dollars on {item}.",
             f"{pronoun.capitalize()} has {rest} - {half} = <<{rest}-{half}={rest - half}>>{rest - half} dollars left."]
    return q, steps, rest - half


TEMPLATES: dict[str, tuple[int, Template]] = {
    "packs": (2, _packs),
    "sharing": (2, _sharing),
    "sales": (3, _sales),
    "savings": (4, _savings),
}
"""name -> (number of solution steps, template)."""


def make_word_problems(
    n: int, seed: int = 0, min_steps: int = 2, max_steps: int = 4, suffix: str = BOXED_SUFFIX
) -> list[dict[str, str]]:
    """``n`` GSM8K-style word problems whose solutions take between ``min_steps`` and ``max_steps`` steps."""
    usable = [(name, t) for name, (steps, t) in TEMPLATES.items() if min_steps <= steps <= max_steps]
    if not usable:
        raise ValueError(f"make_word_problems: no template has {min_steps}..{max_steps} steps; "
                         f"available: { {k: v[0] for k, v in TEMPLATES.items()} }")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        template_name, template = rng.choice(usable)
        name, pronoun = rng.choice(_NAMES)
        question, steps, answer = template(rng, name, pronoun, rng.choice(_ITEMS))
        rows.append({
            "prompt": question + suffix,
            "answer": str(answer),
            "solution": "\n".join(steps) + f"\n#### {answer}",
            "template": template_name,
        })
    return rows

