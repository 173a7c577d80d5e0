"""Answer extraction, plain-number normalisation and math-verify grading (one worker pool per session)."""

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("math_verify")

from reinforcepp.rewards import math_answers as ma  # noqa: E402

GSM8K = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k_test.jsonl"


# --------------------------------------------------------------------------------------------- extraction

@pytest.mark.parametrize(
    "completion, expected",
    [
        (r"so the answer is \boxed{\frac{1}{\sqrt{2}}}.", r"\frac{1}{\sqrt{2}}"),  # nested braces
        (r"first \boxed{3} then \boxed{\{1, 2\}} finally", r"\{1, 2\}"),  # the last box wins
        (r"\boxed{1} ... \fbox{x^{2}}", "x^{2}"),  # \fbox counts too
        (r"Answer: 7, so \boxed{8}", "8"),  # a box beats other markers
        (r"\boxed 5$ done", "5"),  # Hendrycks' brace-less form
        (r"good \boxed{4} then truncated \boxed{12", "4"),  # unclosed last box: an earlier one
        ("Step 1 ... \n#### 1,234\n", "1,234"),
        ("#### 3\nwait, recount\n#### 4", "4"),
        ("Reasoning here.\nAnswer: -12.5", "-12.5"),
        ("**Answer:** 42", "42"),
        ("I do not know.", None),
        (r"\boxed{}", None),
    ],
)
def test_extract_answer(completion, expected):
    assert ma.extract_answer(completion) == expected


@pytest.mark.parametrize(
    "text, expected",
    [("1,234", "1234"), ("$18", "18"), ("\\$1,000.50.", "1000.5"), ("3.0", "3"), ("-0.50", "-0.5"),
     ("2/4", "1/2"), (" 7. ", "7"), ("1,2", None), ("5 cm", None), ("50\\%", None), ("x", None), ("1/0", None)],
)
def test_normalize_number(text, expected):
    assert ma.normalize_number(text) == expected


# ------------------------------------------------------------------------------------------------ grading

EQUIVALENT = [
    ("0.5", r"\frac{1}{2}"), (r"\frac{1}{2}", "0.5"), ("1/2", "0.5"), (r"\dfrac{3}{4}", "0.75"),
    ("3.0", "3"), ("1,234", "1234"), ("-7", "-7"), (r"-\frac{1}{2}", "-0.5"), (r"2\sqrt{2}", r"\sqrt{8}"),
    ("x+1", "1+x"), (r"\{2, 1\}", r"\{1, 2\}"), ("[0,1)", "[0, 1)"), (r"5\text{ cm}", "5"),
]
DIFFERENT = [
    ("0.5", r"\frac{1}{3}"), ("3", "-3"), ("1,2", "12"), ("(0,1)", "[0,1]"), ("x+2", "x+1"), (r"\sqrt{2}", "1.41"),
]


def test_equivalent_forms_match():
    pairs = [(pred, gold) for pred, gold in EQUIVALENT]
    assert ma.grade_many(pairs) == [True] * len(pairs), list(zip(pairs, ma.grade_many(pairs)))


def test_different_answers_do_not_match():
    assert ma.grade_many(DIFFERENT) == [False] * len(DIFFERENT)


def test_fast_path_and_worker_agree_on_numbers():
    pairs = [("3.0", "3"), ("1,000", "1000"), ("-2.50", "-2.5"), ("4", "5")]
    assert ma.grade_many(pairs, fast_path=True) == ma.grade_many(pairs, fast_path=False) == [True, True, True, False]


def test_missing_answer_is_false_and_empty_reference_is_an_error():
    assert ma.grade(None, "3") is False
    assert ma.grade("  ", "3") is False
    with pytest.raises(ValueError, match="reference 0 is empty"):
        ma.grade("3", "")


def test_timeout_gives_false_without_hanging():
    pool = ma.default_pool()
    before = pool.stats["timeouts"]
    start = time.monotonic()
    assert pool.run("sleep", [(30,), (0.0,)], timeout=0.3) == [ma.TIMEOUT, None]
    assert ma.grade(r"\frac{1}{2}", "0.5", timeout=1e-6) is False  # a worker cannot answer that fast
    assert time.monotonic() - start < 5
    assert pool.stats["timeouts"] == before + 2
    assert ma.grade(r"\frac{1}{2}", "0.5") is True  # the replaced worker grades again


def test_worker_crash_gives_false_and_is_counted():
    pool = ma.default_pool()
    before = pool.stats["crashes"]
    assert pool.run("exit", [(3,)]) == [ma.CRASH]
    assert pool.stats["crashes"] == before + 1
    assert ma.grade("x+1", "1+x") is True


def test_unknown_op_is_named():
    with pytest.raises(ValueError, match="unknown op 'eval'"):
        ma.default_pool().run("eval", [("1",)])


# ------------------------------------------------------------------------------------------- real data + reward

@pytest.mark.skipif(not GSM8K.is_file(), reason="shared GSM8K copy not present")
def test_gsm8k_solutions_grade_against_their_own_references():
    rows = [json.loads(line) for line in GSM8K.read_text(encoding="utf-8").splitlines()[:40]]
    refs = [row["answer"].split("####")[-1].strip() for row in rows]
    # The full solution text is the completion: its "#### N" line must be found and graded equal.
    assert ma.math_reward([r["question"] for r in rows], [r["answer"] for r in rows], refs) == [1.0] * len(rows)
    boxed = [rf"So the answer is \boxed{{{ref}}}." for ref in refs]
    assert ma.math_reward([""] * len(rows), boxed, [r["answer"] for r in rows]) == [1.0] * len(rows)
    wrong = [rf"\boxed{{{ref}1}}" for ref in refs]
    assert ma.math_reward([""] * len(rows), wrong, refs) == [0.0] * len(rows)


def test_math_reward_conversational_and_length_check():
    completions = [[{"role": "assistant", "content": r"Thus \boxed{\frac{1}{2}}"}], "no answer here"]
    assert ma.math_reward(["q", "q"], completions, ["0.5", "0.5"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        ma.math_reward(["q", "q"], completions, ["0.5"])


def test_missing_math_verify_is_named(monkeypatch):
    monkeypatch.setattr(ma.importlib.util, "find_spec", lambda name: None)
    assert ma.grade("3.0", "3") is True  # plain numbers never need it
    with pytest.raises(ImportError, match="math-verify"):
        ma.grade(r"\frac{1}{2}", "0.5")
