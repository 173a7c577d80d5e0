"""Knights and Knaves puzzles: a seeded generator with unique solutions, English rendering, and JSONL splits.

On the island every inhabitant is a knight (always tells the truth) or a knave (always lies), and each
one makes a single statement about who is what. A role assignment is *consistent* when every knight's
statement is true and every knave's statement is false. Only puzzles with exactly one consistent
assignment are kept, checked by brute force over all ``2**n`` assignments (at most 256 for 8 people).

Statements are hashable tagged tuples, people are indices ``0..n-1``:

=====================  ==========================================
``("knight", i)``      person i is a knight
``("knave", i)``       person i is a knave
``("not", s)``         not s
``("and", s1, s2..)``  all of the children (2..width children)
``("or", s1, s2..)``   any of the children (2..width children)
``("implies", a, b)``  if a then b
``("iff", a, b)``      a if and only if b
=====================  ==========================================

The sampler follows the grammar used by Logic-RL's data (mem-kk-logic): a leaf with probability 1/6 (or
always at depth 1), otherwise one of the five operators, children distinct. This is our own
implementation; no code or data from those projects is used.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reinforcepp.data.prompts import write_jsonl

Statement = tuple
Assignment = tuple[bool, ...]  # True = knight, False = knave, one entry per person

LEAVES = ("knight", "knave")
OPERATORS = ("not", "and", "or", "implies", "iff")

# Single alphabetic words: the reward's parser finds "<Name> is a knight" with word boundaries.
NAMES = (
    "Zoey", "Liam", "Mason", "Emma", "Noah", "Olivia", "Ava", "Lucas", "Mia", "Ethan",
    "Sofia", "Oliver", "Amelia", "James", "Harper", "Elijah", "Evelyn", "Henry", "Abigail", "Jack",
    "Ella", "Samuel", "Grace", "David", "Chloe", "Joseph", "Lily", "Owen", "Aria", "Daniel",
    "Nora", "Leo", "Hazel", "Isaac", "Aurora", "Wyatt", "Violet", "Caleb", "Stella", "Ryan",
)  # fmt: skip

MIN_PEOPLE, MAX_PEOPLE = 2, 8

PREFIX = (
    "A very special island is inhabited only by knights and knaves. "
    "Knights always tell the truth, and knaves always lie."
)
QUESTION = "So who is a knight and who is a knave?"
INSTRUCTIONS = (
    "First think through the problem inside <think> </think> tags, then give the final answer inside "
    "<answer> </answer> tags, stating the role of every inhabitant on its own line, for example:\n"
    "<think> reasoning here </think>\n<answer>\n(1) <name> is a knight\n(2) <name> is a knave\n...\n</answer>"
)


# --- statements -------------------------------------------------------------------------------------


def evaluate(statement: Statement, assignment: Assignment) -> bool:
    """The truth value of ``statement`` when ``assignment[i]`` says whether person i is a knight."""
    tag = statement[0]
    if tag == "knight":
        return assignment[statement[1]]
    if tag == "knave":
        return not assignment[statement[1]]
    if tag == "not":
        return not evaluate(statement[1], assignment)
    if tag == "and":
        return all(evaluate(child, assignment) for child in statement[1:])
    if tag == "or":
        return any(evaluate(child, assignment) for child in statement[1:])
    if tag == "implies":
        return (not evaluate(statement[1], assignment)) or evaluate(statement[2], assignment)
    if tag == "iff":
        return evaluate(statement[1], assignment) == evaluate(statement[2], assignment)
    raise ValueError(f"unknown statement tag {tag!r} in {statement!r}")


def depth_of(statement: Statement) -> int:
    """Leaves have depth 1; an operator adds one level above its deepest child."""
    if statement[0] in LEAVES:
        return 1
    return 1 + max(depth_of(child) for child in statement[1:])


def max_width(statement: Statement) -> int:
    """The largest number of children of any operator in the tree (0 for a leaf)."""
    if statement[0] in LEAVES:
        return 0
    return max(len(statement) - 1, *(max_width(child) for child in statement[1:]))


def canonical(statement: Statement) -> Statement:
    """A form equal for statements that differ only by the order of commutative children."""
    tag = statement[0]
    if tag in LEAVES:
        return statement
    children = tuple(canonical(child) for child in statement[1:])
    if tag in ("and", "or", "iff"):
        children = tuple(sorted(children, key=repr))
    return (tag, *children)


def consistent_assignments(statements: Sequence[Statement]) -> list[Assignment]:
    """Every assignment under which each knight speaks the truth and each knave lies (brute force)."""
    n = len(statements)
    return [
        assignment
        for assignment in itertools.product((True, False), repeat=n)
        if all(evaluate(statements[i], assignment) == assignment[i] for i in range(n))
    ]


# --- sampling ---------------------------------------------------------------------------------------


def sample_statement(rng: random.Random, speaker: int, num_people: int, depth: int, width: int) -> Statement:
    """A random statement by ``speaker`` of depth at most ``depth`` and operators of at most ``width`` children."""
    if depth == 1 or rng.randrange(6) == 0:
        while True:
            leaf = (rng.choice(LEAVES), rng.randrange(num_people))
            if leaf != ("knave", speaker):  # "I am a knave" can never be said; skip the sure dead end
                return leaf
    operator = rng.choice(OPERATORS)
    if operator == "not":
        return ("not", sample_statement(rng, speaker, num_people, depth - 1, width))
    arity = rng.randint(2, width) if operator in ("and", "or") else 2
    children: list[Statement] = []
    for _ in range(100 * arity):  # distinct children: "A and A" says nothing new
        child = sample_statement(rng, speaker, num_people, depth - 1, width)
        if child not in children:
            children.append(child)
            if len(children) == arity:
                return (operator, *children)
    raise RuntimeError(f"could not draw {arity} distinct children for {operator!r} among {num_people} people")


@dataclass(frozen=True)
class Puzzle:
    """One puzzle: a statement per person, the unique consistent assignment, and the names used to render it."""

    statements: tuple[Statement, ...]
    solution: Assignment
    names: tuple[str, ...]

    @property
    def num_people(self) -> int:
        return len(self.statements)

    def key(self) -> tuple[Statement, ...]:
        """Identity for deduplication: the canonical statements (names are only decoration)."""
        return tuple(canonical(s) for s in self.statements)

    def roles(self) -> dict[str, str]:
        """``{name: "knight" | "knave"}`` in speaking order."""
        return {name: _role(is_knight) for name, is_knight in zip(self.names, self.solution)}

    def question(self) -> str:
        """The puzzle in English, without the answer-format instructions."""
        return render_question(self.statements, self.names)

    def prompt(self) -> str:
        """The Logic-RL-style prompt: the puzzle, then how to lay out the reasoning and the answer."""
        return f"{self.question()}\n\n{INSTRUCTIONS}"

    def solution_text(self) -> str:
        """The canonical answer, one ``(i) Name is a knight|knave`` line per person."""
        return "\n".join(f"({i}) {name} is a {role}" for i, (name, role) in enumerate(self.roles().items(), 1))

    def to_row(self) -> dict:
        """A JSONL row; ``solution`` reaches the reward function as a column."""
        return {
            "prompt": self.prompt(),
            "solution": self.roles(),
            "num_people": self.num_people,
            "solution_text": self.solution_text(),
        }


def generate_puzzles(
    num_people: int, count: int, seed: int, depth: int = 2, width: int = 2, max_retry: int = 1000
) -> list[Puzzle]:
    """``count`` distinct puzzles with exactly one solution each, the same list for the same arguments.

    Puzzles are drawn one after another from ``random.Random(seed)``, so the first k puzzles of a longer
    run equal a run of k. ``max_retry`` consecutive rejected draws raise (e.g. too few distinct puzzles exist).
    """
    if not MIN_PEOPLE <= num_people <= MAX_PEOPLE:
        raise ValueError(f"num_people={num_people} is outside {MIN_PEOPLE}..{MAX_PEOPLE}")
    if depth < 2 or width < 2:
        # At depth 1 everyone says "X is a knight/knave": flipping every role flips every speaker and every
        # statement together, so solutions come in pairs and no puzzle has exactly one.
        raise ValueError(f"need depth >= 2 and width >= 2, got depth={depth}, width={width}")
    rng = random.Random(seed)
    puzzles: list[Puzzle] = []
    seen: set[tuple[Statement, ...]] = set()
    while len(puzzles) < count:
        for _ in range(max_retry):
            statements = tuple(sample_statement(rng, i, num_people, depth, width) for i in range(num_people))
            key = tuple(canonical(s) for s in statements)
            if key in seen:
                continue
            solutions = consistent_assignments(statements)
            if len(solutions) == 1:
                break
        else:
            raise RuntimeError(
                f"no new unique-solution puzzle in {max_retry} draws after {len(puzzles)} of {count} "
                f"(num_people={num_people}, depth={depth}, width={width}); ask for fewer or raise max_retry"
            )
        seen.add(key)
        names = tuple(rng.sample(NAMES, num_people))
        puzzles.append(Puzzle(statements, solutions[0], names))
    return puzzles


# --- rendering --------------------------------------------------------------------------------------


def _role(is_knight: bool) -> str:
    return "knight" if is_knight else "knave"


def render_statement(statement: Statement, names: Sequence[str]) -> str:
    """English for a statement; compound parts inside a compound are parenthesized so deep trees stay unambiguous."""
    tag = statement[0]
    if tag in LEAVES:
        return f"{names[statement[1]]} is a {tag}"
    if tag == "not":
        inner = statement[1]
        if inner[0] in LEAVES:
            return f"{names[inner[1]]} is not a {inner[0]}"
        return f"it is not the case that {_part(inner, names)}"
    if tag in ("and", "or"):
        return f" {tag} ".join(_part(child, names) for child in statement[1:])
    if tag == "implies":
        return f"if {_part(statement[1], names)} then {_part(statement[2], names)}"
    if tag == "iff":
        return f"{_part(statement[1], names)} if and only if {_part(statement[2], names)}"
    raise ValueError(f"unknown statement tag {tag!r} in {statement!r}")


def _part(statement: Statement, names: Sequence[str]) -> str:
    text = render_statement(statement, names)
    simple = statement[0] in LEAVES or (statement[0] == "not" and statement[1][0] in LEAVES)
    return text if simple else f"({text})"


def render_question(statements: Sequence[Statement], names: Sequence[str]) -> str:
    """Island rules, the inhabitants, what each one says, and the question."""
    if len(names) != len(statements):
        raise ValueError(f"{len(names)} names for {len(statements)} statements")
    listed = ", ".join(names[:-1]) + f", and {names[-1]}" if len(names) > 2 else " and ".join(names)
    said = " ".join(
        f'{name} says: "{_capitalize(render_statement(s, names))}."' for name, s in zip(names, statements)
    )
    return f"{PREFIX} You meet {len(names)} inhabitants: {listed}. {said} {QUESTION}"


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- datasets ---------------------------------------------------------------------------------------


def english_rows(puzzles: Sequence[Puzzle]) -> list[dict]:
    """The English JSONL rows of puzzles (``Puzzle.to_row``)."""
    return [p.to_row() for p in puzzles]


RowsFn = Callable[[Sequence[Puzzle]], list[dict]]
TRAIN_PEOPLE = (3, 4, 5, 6, 7)
TEST_PEOPLE = (2, 3, 4, 5, 6, 7, 8)


def make_splits(
    seed: int,
    train_people: Iterable[int] = TRAIN_PEOPLE,
    test_people: Iterable[int] = TEST_PEOPLE,
    per_size_train: int = 1000,
    per_size_test: int = 100,
    depth: int = 2,
    width: int = 2,
    *,
    to_rows: RowsFn = english_rows,
) -> tuple[list[dict], list[dict]]:
    """Train and test rows by number of people; sizes only in ``test_people`` (e.g. 8) are out of distribution.

    For each size one unique-puzzle stream is drawn; the test rows take its first slice and the train
    rows the rest, so train and test never share a puzzle. ``to_rows`` renders the puzzles (English by
    default; ``kk_compact.compact_rows`` for the compact notation).
    """
    train_people, test_people = sorted(set(train_people)), sorted(set(test_people))
    train_rows: list[dict] = []
    test_rows: list[dict] = []
    for n in sorted(set(train_people) | set(test_people)):
        n_test = per_size_test if n in test_people else 0
        n_train = per_size_train if n in train_people else 0
        puzzles = generate_puzzles(n, n_test + n_train, seed=seed * 1000 + n, depth=depth, width=width)
        test_rows += to_rows(puzzles[:n_test])
        train_rows += to_rows(puzzles[n_test:])
    return train_rows, test_rows


def write_kk_dataset(
    out_dir: str | Path,
    seed: int = 0,
    train_people: Iterable[int] = TRAIN_PEOPLE,
    test_people: Iterable[int] = TEST_PEOPLE,
    per_size_train: int = 1000,
    per_size_test: int = 100,
    depth: int = 2,
    width: int = 2,
    *,
    to_rows: RowsFn = english_rows,
) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``test.jsonl`` under ``out_dir``; returns their paths."""
    train_rows, test_rows = make_splits(
        seed, train_people, test_people, per_size_train, per_size_test, depth=depth, width=width, to_rows=to_rows
    )
    out = Path(out_dir)
    return write_jsonl(train_rows, out / "train.jsonl"), write_jsonl(test_rows, out / "test.jsonl")


def main(
    argv: Sequence[str] | None = None,
    *,
    to_rows: RowsFn = english_rows,
    per_size_train: int = 1000,
    description: str = "Write a Knights and Knaves train/test set as JSONL.",
) -> None:
    """``python -m reinforcepp.tasks.knights_knaves OUT_DIR [--seed S] ...`` (and, with ``to_rows``, the
    compact notation's ``python -m reinforcepp.tasks.kk_compact``)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-people", type=int, nargs="+", default=list(TRAIN_PEOPLE))
    parser.add_argument("--test-people", type=int, nargs="+", default=list(TEST_PEOPLE))
    parser.add_argument("--per-size-train", type=int, default=per_size_train)
    parser.add_argument("--per-size-test", type=int, default=100)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--width", type=int, default=2)
    args = parser.parse_args(argv)
    paths = write_kk_dataset(
        args.out_dir, args.seed, args.train_people, args.test_people,
        args.per_size_train, args.per_size_test, args.depth, args.width, to_rows=to_rows,
    )  # fmt: skip
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
