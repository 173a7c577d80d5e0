"""Verifier for Knights and Knaves completions: Logic-RL's format + answer reward.

A completion must be ``<think> ... </think>`` followed by ``<answer> ... </answer>``: each tag exactly once,
in that order, with only whitespace outside the two blocks. When the prompt itself ends with ``<think>``
(base-model prompts that open the think block), the completion is read as if it began with ``<think>``.

The answer is the text inside the last ``<answer>`` block. A person's role is read from phrases like
``(1) Zoey is a knight``, ``zoey is a KNAVE.``, ``**Zoey**: knight`` (case and punctuation do not matter;
``Zoey is not a knight`` is not a claim). A person named with both roles counts as wrong.

=========================================================  ======
score                                                      points
=========================================================  ======
format: tags right (as above)                              +1
format: anything else                                      -1
answer: every person's role correct                        +2
answer: parses, but a role is wrong, missing or ambiguous  -1.5
answer: cannot be parsed (bad format, no answer block, or  -2
no role claim for any person)
=========================================================  ======

Total = format + answer, so a completion scores +3 (right), -0.5 (well formed, wrong or incomplete),
-1 (well formed, no role claims) or -3 (bad format). As in Logic-RL, a bad format gets the -2 answer score
whatever the answer says, so the format is learned first. Unlike Logic-RL, an answer missing a person
scores -1.5 (not -2), and extra mentions of "knight" in the answer are not a parse failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

FORMAT_OK, FORMAT_BAD = 1.0, -1.0
ANSWER_RIGHT, ANSWER_WRONG, ANSWER_UNPARSED = 2.0, -1.5, -2.0

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_WELL_FORMED = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def format_ok(completion: str, prompt: str = "") -> bool:
    """Whether the completion is exactly one think block then one answer block (see module docstring)."""
    text = _with_opened_think(completion, prompt)
    if any(text.count(tag) != 1 for tag in _TAGS):
        return False
    return _WELL_FORMED.fullmatch(text) is not None


def extract_answer(completion: str) -> str | None:
    """The stripped text of the last ``<answer>...</answer>`` block, or None when there is none."""
    blocks = _ANSWER.findall(completion)
    return blocks[-1].strip() if blocks else None


def parse_roles(answer: str, names: Sequence[str]) -> dict[str, str | None]:
    """``{name: "knight" | "knave" | "both" | None}``: "both" when the answer claims both, None when neither."""
    roles: dict[str, str | None] = {}
    for name in names:
        pattern = rf"\b{re.escape(name)}\b[\W_]*(?:is\s+)?(?:an?\s+)?[\W_]*\b(knight|knave)s?\b"
        found = {m.lower() for m in re.findall(pattern, answer, flags=re.IGNORECASE)}
        roles[name] = found.pop() if len(found) == 1 else ("both" if found else None)
    return roles


def score_answer(answer: str | None, solution: Mapping[str, str]) -> float:
    """The answer part of the score: +2 right, -1.5 wrong or incomplete, -2 unparseable."""
    if not answer:
        return ANSWER_UNPARSED
    roles = parse_roles(answer, list(solution))
    if all(role is None for role in roles.values()):
        return ANSWER_UNPARSED
    right = all(roles[name] == role.lower() for name, role in solution.items())
    return ANSWER_RIGHT if right else ANSWER_WRONG


def kk_score(completion: str, solution: Mapping[str, str] | str, prompt: str = "") -> float:
    """Format score plus answer score for one completion."""
    solution = _as_solution(solution)
    if not format_ok(completion, prompt):
        return FORMAT_BAD + ANSWER_UNPARSED
    return FORMAT_OK + score_answer(extract_answer(completion), solution)


def kk_reward(prompts: list[str], completions: list[str], solution: list[Any], **_: Any) -> list[float]:
    """TRL-style reward: one score per completion; ``solution`` is the JSONL column of ``{name: role}``."""
    _check_lengths(prompts, completions, solution)
    return [kk_score(c, s, p) for p, c, s in zip(prompts, completions, solution)]


def kk_accuracy(prompts: list[str], completions: list[str], solution: list[Any], **_: Any) -> list[float]:
    """1.0 when the last answer block gives every role right, else 0.0 (format not required, for evaluation)."""
    _check_lengths(prompts, completions, solution)
    return [
        1.0 if score_answer(extract_answer(c), _as_solution(s)) == ANSWER_RIGHT else 0.0
        for c, s in zip(completions, solution)
    ]


def _with_opened_think(completion: str, prompt: str) -> str:
    # The prompt's own "<think>" opens the block, so the completion must not open it again.
    return "<think>" + completion if prompt.rstrip().endswith("<think>") else completion


def _as_solution(solution: Mapping[str, str] | str) -> Mapping[str, str]:
    if isinstance(solution, str):  # a column serialized as JSON text
        solution = json.loads(solution)
    if not isinstance(solution, Mapping) or not solution:
        raise ValueError(f"solution must be a non-empty {{name: 'knight'|'knave'}} mapping, got {solution!r}")
    bad = {name: role for name, role in solution.items() if str(role).lower() not in ("knight", "knave")}
    if bad:
        raise ValueError(f"solution roles must be 'knight' or 'knave', got {bad!r}")
    return solution


def _check_lengths(prompts: Sequence, completions: Sequence, solution: Sequence) -> None:
    if not len(prompts) == len(completions) == len(solution):
        raise ValueError(
            f"got {len(prompts)} prompts, {len(completions)} completions and {len(solution)} solutions"
        )
