"""Knights and Knaves generator: hand-solved puzzles, uniqueness, determinism, dedup, limits and splits."""

from __future__ import annotations

import itertools
import json

import pytest

from reinforcepp.tasks import knights_knaves as kk

# Names for the hand-made puzzles: person 0 is A, 1 is B, ...
ABCD = ("A", "B", "C", "D", "E")


def knight(i):
    return ("knight", i)


def knave(i):
    return ("knave", i)


# --- hand-made puzzles, solved on paper -------------------------------------------------------------

# A: "B is a knave."  B: "A and B are both knaves."
# If B were a knight, B would be saying "B is a knave": impossible, so B is a knave. B's statement is then
# false, and since B is a knave, A is not a knave: A is a knight. A truthfully says B is a knave.
PUZZLE_1 = ((knave(1), ("and", knave(0), knave(1))), (True, False))

# A: "A is a knave or B is a knight."  B: "A is a knight."
# If A were a knave, "A is a knave or ..." would be true: a knave cannot say it. So A is a knight, the
# statement is true with its first part false, so B is a knight; B truthfully says A is a knight.
PUZZLE_2 = ((("or", knave(0), knight(1)), knight(0)), (True, True))

# A: "B is a knave."  B: "A is a knight if and only if C is a knight."  C: "A is not a knight."
# A's statement holds exactly when A and B differ; C's exactly when C and A differ. So A and C differ,
# "A iff C" is false, hence B is a knave, A is a knight (differs from B), C is a knave (differs from A).
PUZZLE_3 = (
    (knave(1), ("iff", knight(0), knight(2)), ("not", knight(0))),
    (True, False, False),
)

# A: "B, C and D are all knights."  B: "A is a knave."  C: "B is a knave or D is a knave."
# D: "It is not the case that (if A is a knight then C is a knave)."  (width 3, depth 3)
# B's statement holds exactly when A and B differ. If A were a knight, B, C, D would all be knights,
# yet B must differ from A: impossible. So A is a knave and B a knight. D's statement means
# "A is a knight and C is a knight", false since A is a knave: D is a knave. Then C's statement is true
# (D is a knave): C is a knight. Check A: "B, C, D all knights" is false (D), and A is a knave. Good.
PUZZLE_4 = (
    (
        ("and", knight(1), knight(2), knight(3)),
        knave(0),
        ("or", knave(1), knave(3)),
        ("not", ("implies", knight(0), knave(2))),
    ),
    (False, True, True, False),
)

# A: "B is a knave."  B: "C is a knave."  C: "A is a knave and B is a knave."
# If C were a knight, A and B would be knaves; B (a knave) says "C is a knave", false, fine; but A
# (a knave) says "B is a knave", which would be true: impossible. So C is a knave, B truthfully says so
# and is a knight, and A's "B is a knave" is false: A is a knave. C's "A and B knaves" is false. Good.
PUZZLE_5 = ((knave(1), knave(2), ("and", knave(0), knave(1))), (False, True, False))

HAND_MADE = [PUZZLE_1, PUZZLE_2, PUZZLE_3, PUZZLE_4, PUZZLE_5]

# No solution. A: "B is a knight."  B: "If A is a knight then C is a knave."  C: "A is a knave iff B is a knave."
# A knave => B knave, but then B's "if A is a knight ..." is vacuously true: a knave cannot say it.
# A knight => B knight => C knave, and C says "False iff False", true: a knave cannot say it.
NO_SOLUTION = (knight(1), ("implies", knight(0), knave(2)), ("iff", knave(0), knave(1)))

# Two solutions: A: "B is a knight."  B: "A is a knight."  Both knights, or both knaves.
TWO_SOLUTIONS = (knight(1), knight(0))


@pytest.mark.parametrize("statements, solution", HAND_MADE)
def test_solver_finds_the_hand_solved_solution_and_only_it(statements, solution):
    assert kk.consistent_assignments(statements) == [solution]


def test_uniqueness_check_rejects_zero_and_two_solutions():
    assert kk.consistent_assignments(NO_SOLUTION) == []
    assert sorted(kk.consistent_assignments(TWO_SOLUTIONS)) == [(False, False), (True, True)]


def test_evaluate_each_operator():
    a = (True, False)  # person 0 knight, person 1 knave
    assert kk.evaluate(knight(0), a) and kk.evaluate(knave(1), a)
    assert not kk.evaluate(("not", knight(0)), a)
    assert not kk.evaluate(("and", knight(0), knight(1)), a)
    assert kk.evaluate(("or", knight(0), knight(1)), a)
    assert not kk.evaluate(("implies", knight(0), knight(1)), a)
    assert kk.evaluate(("implies", knight(1), knight(0)), a)  # false premise
    assert kk.evaluate(("iff", knight(1), knave(0)), a)
    with pytest.raises(ValueError, match="maybe"):
        kk.evaluate(("maybe", 0), a)


def test_rendering_of_a_hand_made_puzzle():
    statements, solution = PUZZLE_1
    puzzle = kk.Puzzle(statements, solution, ("Zoey", "Liam"))
    assert puzzle.question() == (
        "A very special island is inhabited only by knights and knaves. Knights always tell the truth, "
        "and knaves always lie. You meet 2 inhabitants: Zoey and Liam. "
        'Zoey says: "Liam is a knave." Liam says: "Zoey is a knave and Liam is a knave." '
        "So who is a knight and who is a knave?"
    )
    assert puzzle.solution_text() == "(1) Zoey is a knight\n(2) Liam is a knave"
    assert puzzle.roles() == {"Zoey": "knight", "Liam": "knave"}
    assert "<think>" in puzzle.prompt() and "<answer>" in puzzle.prompt()


def test_deep_statements_are_parenthesized():
    text = kk.render_statement(PUZZLE_4[0][3], ABCD)
    assert text == "it is not the case that (if A is a knight then C is a knave)"
    nested = ("iff", ("and", knight(0), knave(1)), ("not", knight(2)))
    assert kk.render_statement(nested, ABCD) == "(A is a knight and B is a knave) if and only if C is not a knight"


def test_canonical_form_ignores_order_of_commutative_children():
    assert kk.canonical(("and", knight(0), knave(1))) == kk.canonical(("and", knave(1), knight(0)))
    assert kk.canonical(("iff", knight(0), knave(1))) == kk.canonical(("iff", knave(1), knight(0)))
    assert kk.canonical(("implies", knight(0), knave(1))) != kk.canonical(("implies", knave(1), knight(0)))


# --- the generator ----------------------------------------------------------------------------------

_OPS = {
    "not": lambda vals: not vals[0],
    "and": all,
    "or": any,
    "implies": lambda vals: (not vals[0]) or vals[1],
    "iff": lambda vals: vals[0] == vals[1],
}


def independent_truth(statement, assignment):
    """A second evaluator, written apart from the module's, for re-checking generated puzzles."""
    if statement[0] in ("knight", "knave"):
        return assignment[statement[1]] == (statement[0] == "knight")
    return _OPS[statement[0]]([independent_truth(child, assignment) for child in statement[1:]])


def independent_solutions(statements):
    n = len(statements)
    return [
        a
        for a in itertools.product((False, True), repeat=n)
        if all(independent_truth(s, a) == a[i] for i, s in enumerate(statements))
    ]


@pytest.mark.parametrize("num_people", range(2, 9))
def test_every_generated_puzzle_has_exactly_its_one_solution(num_people):
    for puzzle in kk.generate_puzzles(num_people, 10, seed=7):
        assert independent_solutions(puzzle.statements) == [puzzle.solution]
        assert len(set(puzzle.names)) == num_people


def test_generator_is_deterministic_per_seed_and_seeds_differ():
    first = kk.generate_puzzles(4, 30, seed=3)
    assert first == kk.generate_puzzles(4, 30, seed=3)
    assert [p.prompt() for p in first] == [p.prompt() for p in kk.generate_puzzles(4, 30, seed=3)]
    assert {p.key() for p in first} != {p.key() for p in kk.generate_puzzles(4, 30, seed=4)}
    # Sequential draws: a shorter run is a prefix of a longer one.
    assert kk.generate_puzzles(4, 10, seed=3) == first[:10]


def test_generated_puzzles_are_distinct():
    puzzles = kk.generate_puzzles(2, 150, seed=0)  # n=2 has only ~180 distinct puzzles: dedup is tested hard
    keys = [p.key() for p in puzzles]
    assert len(set(keys)) == len(keys)


def test_generator_says_when_it_runs_out_of_puzzles():
    with pytest.raises(RuntimeError, match="num_people=2"):
        kk.generate_puzzles(2, 1000, seed=0, max_retry=200)


@pytest.mark.parametrize("num_people", [1, 9])
def test_generator_rejects_sizes_out_of_range(num_people):
    with pytest.raises(ValueError, match=f"num_people={num_people}"):
        kk.generate_puzzles(num_people, 1, seed=0)


@pytest.mark.parametrize("depth, width", [(2, 2), (2, 3), (3, 3)])
def test_depth_and_width_limits_hold_and_are_reached(depth, width):
    statements = [s for p in kk.generate_puzzles(5, 40, seed=1, depth=depth, width=width) for s in p.statements]
    assert max(kk.depth_of(s) for s in statements) == depth
    assert max(kk.max_width(s) for s in statements) == width


@pytest.mark.parametrize("depth, width", [(1, 2), (2, 1)])
def test_generator_rejects_limits_that_cannot_give_unique_puzzles(depth, width):
    # Depth 1 (only "X is a knight/knave") never has a unique solution; width 1 is no operator.
    with pytest.raises(ValueError, match=f"depth={depth}, width={width}"):
        kk.generate_puzzles(4, 1, seed=0, depth=depth, width=width)


def test_nobody_says_i_am_a_knave():
    for p in kk.generate_puzzles(3, 100, seed=2):
        assert all(s != knave(i) for i, s in enumerate(p.statements))


# --- splits and files -------------------------------------------------------------------------------


def test_splits_are_disjoint_and_have_the_out_of_distribution_size():
    train, test = kk.make_splits(seed=5, per_size_train=12, per_size_test=4)
    train_sizes = sorted({r["num_people"] for r in train})
    test_sizes = sorted({r["num_people"] for r in test})
    assert train_sizes == [3, 4, 5, 6, 7] and test_sizes == [2, 3, 4, 5, 6, 7, 8]
    assert len(train) == 5 * 12 and len(test) == 7 * 4
    assert sum(r["num_people"] == 8 for r in test) == 4
    assert len({r["prompt"] for r in train + test}) == len(train) + len(test)


def test_split_puzzles_are_disjoint_by_statements():
    # The same seed derivation as make_splits: test takes the head of each size's stream, train the rest.
    stream = kk.generate_puzzles(3, 16, seed=5 * 1000 + 3)
    train, test = kk.make_splits(seed=5, train_people=(3,), test_people=(3,), per_size_train=12, per_size_test=4)
    assert [r["prompt"] for r in test] == [p.prompt() for p in stream[:4]]
    assert [r["prompt"] for r in train] == [p.prompt() for p in stream[4:]]
    assert not {p.key() for p in stream[:4]} & {p.key() for p in stream[4:]}


def test_write_kk_dataset_rows(tmp_path):
    train_path, test_path = kk.write_kk_dataset(tmp_path, seed=1, per_size_train=3, per_size_test=2)
    rows = [json.loads(line) for line in test_path.read_text().splitlines()]
    assert len(rows) == 7 * 2 and len(train_path.read_text().splitlines()) == 5 * 3
    for row in rows:
        assert set(row) >= {"prompt", "solution", "num_people"}
        assert len(row["solution"]) == row["num_people"]
        assert set(row["solution"].values()) <= {"knight", "knave"}
        assert all(name in row["prompt"] for name in row["solution"])
    again = kk.write_kk_dataset(tmp_path / "again", seed=1, per_size_train=3, per_size_test=2)
    assert again[1].read_text() == test_path.read_text()
