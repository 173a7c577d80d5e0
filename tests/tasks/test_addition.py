"""The tiny demo job's task: every addition pair once, a held-out split never trained on, noisy SFT targets."""

import pytest

from reinforcepp.rewards.toy import last_integer, leading_integer
from reinforcepp.tasks.addition import addition_row, addition_splits, question_splits, with_noisy_responses


def test_splits_cover_every_pair_once_and_are_disjoint():
    train, held_out = addition_splits(max_operand=9, held_out=20, seed=3)
    prompts = [r["prompt"] for r in train + held_out]
    assert len(held_out) == 20 and len(prompts) == 100 == len(set(prompts))
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held_out}
    assert addition_splits(max_operand=9, held_out=20, seed=3) == (train, held_out)  # seeded
    assert addition_splits(max_operand=9, held_out=20, seed=4)[1] != held_out
    with pytest.raises(ValueError, match="held_out must be in 1..99"):
        addition_splits(max_operand=9, held_out=100)


def test_rows_hold_the_sum():
    assert addition_row(17, 72) == {"prompt": "17+72=", "answer": "89", "response": "89"}


def test_noisy_responses_change_one_digit_of_about_the_rate_and_keep_the_answer():
    rows = [addition_row(a, b) for a in range(40) for b in range(50)]  # 2000 rows
    noisy = with_noisy_responses(rows, 0.3, seed=1)
    changed = [(r, n) for r, n in zip(rows, noisy) if r["response"] != n["response"]]
    assert 0.26 < len(changed) / len(rows) < 0.34
    for row, new in changed:
        assert new["answer"] == row["answer"] and len(new["response"]) == len(row["response"])
        assert sum(a != b for a, b in zip(row["response"], new["response"])) == 1
    assert with_noisy_responses(rows, 0.0) == rows
    with pytest.raises(ValueError, match="rate must be in"):
        with_noisy_responses(rows, 1.0)


def test_leading_integer_reward():
    completions = ["89", "89...", "89<eos>", " 89", "8", "890", "", "x89"]
    assert leading_integer(["17+72="] * 8, completions, answer=["89"] * 8) == [1, 1, 1, 0, 0, 0, 0, 0]


def test_question_splits_ask_in_words_and_hold_the_same_pairs_out():
    train, held_out = question_splits(max_operand=9, held_out=20, seed=3)
    prompt = held_out[0]["prompt"]
    assert prompt.startswith("What is ") and prompt.endswith("Answer with the number only.")
    assert [r["answer"] for r in held_out] == [r["answer"] for r in addition_splits(9, 20, seed=3)[1]]
    assert len(train) == 80 and not {r["prompt"] for r in train} & {r["prompt"] for r in held_out}


def test_last_integer_reward_reads_the_last_number_written():
    completions = ["7 + 5 = 12", "The answer is 12.", "12", "1,012", "12 + 1 = 13", "twelve", "", "The answer is"]
    answers = ["12"] * 7 + ["12"]
    assert last_integer([""] * 8, completions, answer=answers) == [1, 1, 1, 0, 0, 0, 0, 0]
    assert last_integer([""] * 2, ["3 - 5 = -2", "1,234"], answer=["-2", "1234"]) == [1, 1]
