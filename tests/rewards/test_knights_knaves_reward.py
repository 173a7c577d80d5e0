"""Knights and Knaves verifier: scores of crafted completions, parsing, and the TRL-style batch API."""

from __future__ import annotations

import json

import pytest

from reinforcepp.rewards.function import load_reward_function, score_completions
from reinforcepp.rewards.knights_knaves import kk_accuracy, kk_reward, kk_score, parse_roles
from reinforcepp.tasks.knights_knaves import generate_puzzles

SOLUTION = {"Zoey": "knave", "Liam": "knight", "Mason": "knight"}
RIGHT = "(1) Zoey is a knave\n(2) Liam is a knight\n(3) Mason is a knight"


def respond(answer: str, think: str = "Suppose Zoey is a knight...") -> str:
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


@pytest.mark.parametrize(
    "completion, expected",
    [
        pytest.param(respond(RIGHT), 3.0, id="right"),
        pytest.param("  " + respond(RIGHT) + "\n", 3.0, id="right-surrounding-whitespace"),
        pytest.param(respond(RIGHT.replace("Mason is a knight", "Mason is a knave")), -0.5, id="wrong-role"),
        pytest.param(respond("(1) Zoey is a knave\n(2) Liam is a knight"), -0.5, id="missing-person"),
        pytest.param(respond(RIGHT + "\nZoey is a knight"), -0.5, id="both-roles-for-one-person"),
        pytest.param(respond("I am not sure."), -1.0, id="no-role-claims"),
        pytest.param(respond(""), -1.0, id="empty-answer"),
        pytest.param("<think>hmm</think> Zoey is a knave, Liam and Mason are knights.", -3.0, id="missing-answer-tags"),
        pytest.param(RIGHT, -3.0, id="no-tags-at-all"),
        pytest.param(f"<answer>{RIGHT}</answer><think>hmm</think>", -3.0, id="wrong-order"),
        pytest.param(f"<think>hmm<answer>{RIGHT}</answer></think>", -3.0, id="answer-inside-think"),
        pytest.param(f"<think>hmm</think><think>more</think><answer>{RIGHT}</answer>", -3.0, id="two-thinks"),
        pytest.param(f"<think>hmm</think><answer>{RIGHT}</answer><answer>{RIGHT}</answer>", -3.0, id="two-answers"),
        pytest.param(f"<think>hmm<answer>{RIGHT}</answer>", -3.0, id="unclosed-think"),
        pytest.param("Let me see. " + respond(RIGHT), -3.0, id="text-before"),
        pytest.param(respond(RIGHT) + " Hope this helps!", -3.0, id="text-after"),
        pytest.param(f"<think>hmm</think> So: <answer>{RIGHT}</answer>", -3.0, id="text-between"),
    ],
)
def test_scores_of_crafted_completions(completion, expected):
    assert kk_score(completion, SOLUTION) == expected


@pytest.mark.parametrize(
    "answer",
    [
        "zoey is a KNAVE. liam is a Knight! mason is a knight.",
        "**Zoey**: knave\n**Liam**: knight\n**Mason**: knight",
        "Zoey is a knave, Liam is a knight, and Mason is a knight.",
        "- Mason - knight\n- Liam - knight\n- Zoey - knave",
        "(1) Zoey is a knave (she lied)\n(2) Liam is a knight\n(3) Mason is a knight",
    ],
)
def test_parsing_is_robust_to_case_punctuation_and_order(answer):
    assert kk_score(respond(answer), SOLUTION) == 3.0


def test_negations_and_other_names_are_not_claims():
    roles = parse_roles("Zoey is not a knight. Liam is a knight. Zoeya is a knave.", ["Zoey", "Liam"])
    assert roles == {"Zoey": None, "Liam": "knight"}


def test_prompt_that_opens_the_think_block():
    prompt = "User: a puzzle\nAssistant: <think>"
    assert kk_score(f"reasoning</think><answer>{RIGHT}</answer>", SOLUTION, prompt) == 3.0
    # The prompt already opened the block; opening it again breaks the format, as in Logic-RL.
    assert kk_score(respond(RIGHT), SOLUTION, prompt) == -3.0


def test_batch_reward_and_accuracy():
    completions = [respond(RIGHT), respond("Zoey is a knight"), f"<answer>{RIGHT}</answer>"]
    prompts = ["p"] * 3
    solutions = [SOLUTION, SOLUTION, json.dumps(SOLUTION)]  # a JSON-text column works too
    assert kk_reward(prompts, completions, solution=solutions) == [3.0, -0.5, -3.0]
    # Accuracy ignores the format: the third one answers right without a think block.
    assert kk_accuracy(prompts, completions, solution=solutions) == [1.0, 0.0, 1.0]


def test_bad_inputs_name_the_culprit():
    with pytest.raises(ValueError, match="2 prompts, 1 completions and 1 solutions"):
        kk_reward(["a", "b"], ["c"], solution=[SOLUTION])
    with pytest.raises(ValueError, match="'Liam': 'wizard'"):
        kk_score(respond(RIGHT), {"Zoey": "knave", "Liam": "wizard"})
    with pytest.raises(ValueError, match="non-empty"):
        kk_score(respond(RIGHT), {})


def test_loads_through_the_reward_function_api():
    fn = load_reward_function("reinforcepp.rewards.knights_knaves:kk_reward")
    scores = score_completions(fn, ["p"], [respond(RIGHT)], {"solution": [SOLUTION], "num_people": [3]})
    assert scores == [3.0]


def test_generated_solution_texts_score_full_marks_and_flips_do_not():
    for puzzle in generate_puzzles(5, 20, seed=11):
        row = puzzle.to_row()
        assert kk_score(respond(row["solution_text"]), row["solution"], row["prompt"]) == 3.0
        lines = row["solution_text"].splitlines()
        swap = {"knight": "knave", "knave": "knight"}
        role = lines[0].rsplit(" ", 1)[1]
        flipped = "\n".join([lines[0].replace(role, swap[role]), *lines[1:]])  # first person's role flipped
        assert kk_score(respond(flipped), row["solution"], row["prompt"]) == -0.5
