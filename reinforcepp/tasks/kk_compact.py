"""Knights and Knaves in a compact prefix notation a tiny character-level model can read on a CPU.

The English prompts of :mod:`reinforcepp.tasks.knights_knaves` run to 600-900 characters, too long for a
~1M-parameter model with 256 positions. This module renders the *same* puzzles (same generator, same
unique-solution guarantee) in the alphabet of :data:`reinforcepp.testing.CHARS`, so the K&K experiment of
the REINFORCE++ paper (train on 3-7 people, test on 2-8, accuracy by number of people) fits in minutes.

Notation (prefix / Polish, so no parentheses are needed):

==========  ===============================================================
``a``..``h``  people 0..7 in speaking order
``kX``      X is a knight
``nX``      X is a knave
``!S``      not S
``+S T``    S and T (written without the space: ``+kbnc``)
``,S T``    S or T
``-S T``    if S then T
``=S T``    S iff T
``+3S T U`` and/or with more than two children: the arity digit follows the operator (only with width > 2)
==========  ===============================================================

A prompt lists ``speaker:statement`` separated by spaces and ends with `` ?``, e.g.
``a:+kbnc b:!ka c:=kakb ?``; the answer is one letter per person in order, ``k`` knight or ``n`` knave
(``kkn``). Eight people at depth 2 stay under 70 characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from reinforcepp.rewards.toy import leading_match
from reinforcepp.tasks.knights_knaves import (
    LEAVES,
    TEST_PEOPLE,
    TRAIN_PEOPLE,
    Puzzle,
    Statement,
    make_splits,
    write_kk_dataset,
)
from reinforcepp.tasks.knights_knaves import main as kk_main

PEOPLE = "abcdefgh"
OPERATOR_SYMBOLS = {"not": "!", "and": "+", "or": ",", "implies": "-", "iff": "="}
LEAF_SYMBOLS = {"knight": "k", "knave": "n"}
QUESTION = "?"

_LEADING_ROLES = re.compile(r"[kn]+")


# --- rendering --------------------------------------------------------------------------------------


def compact_statement(statement: Statement) -> str:
    """The prefix-notation text of a statement; binary and/or carry no arity so depth-2 puzzles stay short."""
    tag = statement[0]
    if tag in LEAVES:
        return LEAF_SYMBOLS[tag] + PEOPLE[statement[1]]
    if tag not in OPERATOR_SYMBOLS:
        raise ValueError(f"unknown statement tag {tag!r} in {statement!r}")
    children = statement[1:]
    arity = str(len(children)) if tag in ("and", "or") and len(children) > 2 else ""
    if len(children) > 9:
        raise ValueError(f"at most 9 children can be written, got {len(children)} in {statement!r}")
    return OPERATOR_SYMBOLS[tag] + arity + "".join(compact_statement(child) for child in children)


def compact_prompt(puzzle: Puzzle) -> str:
    """``a:<stmt> b:<stmt> ... ?``: each person's statement by speaker letter, then the question mark."""
    said = " ".join(f"{PEOPLE[i]}:{compact_statement(s)}" for i, s in enumerate(puzzle.statements))
    return f"{said} {QUESTION}"


def compact_answer(puzzle: Puzzle) -> str:
    """One letter per person in speaking order: ``k`` for a knight, ``n`` for a knave."""
    return "".join("k" if is_knight else "n" for is_knight in puzzle.solution)


def compact_rows(puzzles: Iterable[Puzzle]) -> list[dict]:
    """JSONL rows: ``response`` repeats ``answer`` because SFT trains on it while the reward reads ``answer``."""
    rows = []
    for puzzle in puzzles:
        answer = compact_answer(puzzle)
        rows.append({"prompt": compact_prompt(puzzle), "answer": answer, "response": answer, "people": puzzle.num_people})
    return rows


# --- reward -----------------------------------------------------------------------------------------


def kk_compact_reward(prompts: list[str], completions: list[str], answer: list[str], **_: object) -> list[float]:
    """1.0 when the completion's leading run of ``k``/``n`` letters equals the answer exactly, else 0.0.

    Leading spaces are stripped (a model may echo the prompt's separator); anything after the run is
    ignored, so trailing text after a correct answer is not punished, but an extra role letter is.
    """
    return leading_match(_LEADING_ROLES, [c.lstrip(" ") for c in completions], answer)


# --- datasets ---------------------------------------------------------------------------------------


def make_compact_splits(
    seed: int,
    train_people: Iterable[int] = TRAIN_PEOPLE,
    test_people: Iterable[int] = TEST_PEOPLE,
    per_size_train: int = 2000,
    per_size_test: int = 100,
    depth: int = 2,
    width: int = 2,
) -> tuple[list[dict], list[dict]]:
    """``knights_knaves.make_splits`` (the same puzzles and split rule) rendered with ``compact_rows``."""
    return make_splits(seed, train_people, test_people, per_size_train, per_size_test, depth, width,
                       to_rows=compact_rows)


def write_compact_splits(
    out_dir: str | Path,
    seed: int = 0,
    train_people: Iterable[int] = TRAIN_PEOPLE,
    test_people: Iterable[int] = TEST_PEOPLE,
    per_size_train: int = 2000,
    per_size_test: int = 100,
    depth: int = 2,
    width: int = 2,
) -> tuple[Path, Path]:
    """Write compact ``train.jsonl`` and ``test.jsonl`` under ``out_dir``; returns their paths."""
    return write_kk_dataset(out_dir, seed, train_people, test_people, per_size_train, per_size_test, depth, width,
                            to_rows=compact_rows)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m reinforcepp.tasks.kk_compact OUT_DIR [--seed S] [--per-size-train N] ...``"""
    kk_main(argv, to_rows=compact_rows, per_size_train=2000,
            description="Write a compact Knights and Knaves train/test set as JSONL.")


if __name__ == "__main__":
    main()
