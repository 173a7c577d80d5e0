"""Compact K&K: hand renderings, faithfulness via an independent prefix evaluator, reward cases and splits."""

from __future__ import annotations

import itertools
import json

import pytest

from reinforcepp.tasks import kk_compact as kc
from reinforcepp.tasks import knights_knaves as kk
from reinforcepp.testing import CHARS

# --- hand-built renderings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "text"),
    [
        (("knight", 1), "kb"),
        (("and", ("knight", 1), ("knave", 2)), "+kbnc"),
        (("not", ("knight", 0)), "!ka"),
        (("iff", ("knight", 0), ("knight", 1)), "=kakb"),
        (("implies", ("or", ("knave", 7), ("knight", 3)), ("not", ("knave", 0))), "-,nhkd!na"),
        (("and", ("knight", 0), ("knave", 1), ("knight", 2)), "+3kanbkc"),
    ],
)
def test_compact_statement_by_hand(statement, text):
    assert kc.compact_statement(statement) == text


def test_prompt_and_answer_by_hand():
    puzzle = kk.Puzzle(
        statements=(("and", ("knight", 1), ("knave", 2)), ("not", ("knight", 0)), ("iff", ("knight", 0), ("knight", 1))),
        solution=(True, True, False),
        names=("Zoey", "Liam", "Mason"),
    )
    assert kc.compact_prompt(puzzle) == "a:+kbnc b:!ka c:=kakb ?"
    assert kc.compact_answer(puzzle) == "kkn"
    assert kc.compact_rows([puzzle]) == [
        {"prompt": "a:+kbnc b:!ka c:=kakb ?", "answer": "kkn", "response": "kkn", "people": 3}
    ]


# --- faithfulness: an evaluator of the compact text written here, independent of the renderer -------


def _parse_eval(text: str, pos: int, roles: tuple[bool, ...]) -> tuple[bool, int]:
    """Evaluate the prefix expression starting at ``pos``; returns (value, position after it)."""
    c = text[pos]
    if c in "kn":
        is_knight = roles["abcdefgh".index(text[pos + 1])]
        return (is_knight if c == "k" else not is_knight), pos + 2
    if c == "!":
        value, end = _parse_eval(text, pos + 1, roles)
        return not value, end
    pos += 1
    arity = 2
    if c in "+," and text[pos].isdigit():
        arity, pos = int(text[pos]), pos + 1
    values = []
    for _ in range(arity if c in "+," else 2):
        value, pos = _parse_eval(text, pos, roles)
        values.append(value)
    if c == "+":
        return all(values), pos
    if c == ",":
        return any(values), pos
    if c == "-":
        return (not values[0]) or values[1], pos
    if c == "=":
        return values[0] == values[1], pos
    raise AssertionError(f"unexpected symbol {c!r} in {text!r}")


def _evaluate_text(text: str, roles: tuple[bool, ...]) -> bool:
    value, end = _parse_eval(text, 0, roles)
    assert end == len(text), f"trailing text in {text!r}"
    return value


def _statements_of(prompt: str) -> list[str]:
    """The statement texts of a compact prompt, checking the speaker letters are a, b, c... in order."""
    parts = prompt.split(" ")
    assert parts[-1] == "?"
    texts = []
    for i, part in enumerate(parts[:-1]):
        speaker, text = part.split(":")
        assert speaker == "abcdefgh"[i]
        texts.append(text)
    return texts


@pytest.mark.parametrize(("num_people", "width"), [(2, 2), (3, 2), (5, 2), (8, 2), (4, 3)])
def test_compact_rendering_is_faithful(num_people, width):
    for puzzle in kk.generate_puzzles(num_people, 5, seed=11 + num_people, depth=2, width=width):
        prompt, answer = kc.compact_prompt(puzzle), kc.compact_answer(puzzle)
        assert set(prompt) <= set(CHARS) and set(answer) <= {"k", "n"} and len(answer) == num_people
        texts = _statements_of(prompt)
        roles = tuple(letter == "k" for letter in answer)
        # Under the answer every knight's text is true and every knave's false ...
        assert [_evaluate_text(t, roles) for t in texts] == list(roles)
        # ... and no other assignment is consistent.
        consistent = [
            a for a in itertools.product((True, False), repeat=num_people)
            if all(_evaluate_text(t, a) == a[i] for i, t in enumerate(texts))
        ]  # fmt: skip
        assert consistent == [roles]


def test_eight_people_prompts_are_short():
    rows = kc.compact_rows(kk.generate_puzzles(8, 20, seed=3))
    assert max(len(r["prompt"]) for r in rows) < 100


# --- reward -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "expected", "score"),
    [
        ("kkn", "kkn", 1.0),
        (" kkn", "kkn", 1.0),  # leading spaces are stripped
        ("kkn a:", "kkn", 1.0),  # text after the run is ignored
        ("kkn.", "kkn", 1.0),
        ("kknk", "kkn", 0.0),  # an extra role letter is wrong
        ("kk", "kkn", 0.0),
        ("knk", "kkn", 0.0),
        ("", "kkn", 0.0),
        ("x kkn", "kkn", 0.0),
        ("\nkkn", "kkn", 0.0),  # only spaces are stripped
    ],
)
def test_reward(completion, expected, score):
    assert kc.kk_compact_reward(["p"], [completion], answer=[expected], people=[3]) == [score]


# --- splits -----------------------------------------------------------------------------------------


def test_splits_disjoint_by_people_and_deterministic(tmp_path):
    train, test = kc.make_compact_splits(
        seed=1, train_people=(3, 4), test_people=(2, 3, 5), per_size_train=30, per_size_test=10
    )
    assert sorted({r["people"] for r in train}) == [3, 4]
    assert sorted({r["people"] for r in test}) == [2, 3, 5]
    assert all(sum(r["people"] == n for r in test) == 10 for n in (2, 3, 5))
    assert all(sum(r["people"] == n for r in train) == 30 for n in (3, 4))
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    assert all(len(r["answer"]) == r["people"] and r["response"] == r["answer"] for r in train + test)
    # the test set does not depend on the train size
    assert kc.make_compact_splits(1, (3, 4), (2, 3, 5), 5, 10)[1] == test

    paths = kc.write_compact_splits(tmp_path / "a", 1, (3, 4), (2, 3, 5), 30, 10)
    again = kc.write_compact_splits(tmp_path / "b", 1, (3, 4), (2, 3, 5), 30, 10)
    assert [p.name for p in paths] == ["train.jsonl", "test.jsonl"]
    assert [p.read_text() for p in paths] == [p.read_text() for p in again]
    assert [json.loads(line) for line in paths[1].read_text().splitlines()] == test
    other_seed = kc.make_compact_splits(2, (3, 4), (2, 3, 5), 30, 10)
    assert other_seed != (train, test)


def test_main_writes_files(tmp_path, capsys):
    kc.main([str(tmp_path), "--per-size-train", "4", "--per-size-test", "2", "--train-people", "3"])
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 4
    assert len((tmp_path / "test.jsonl").read_text().splitlines()) == 2 * 7
    assert "train.jsonl" in capsys.readouterr().out
