"""think_format_reward and DAPO's overlong penalty, checked by hand."""

import pytest

from reinforcepp.rewards.format_rewards import is_think_format, overlong_penalty, think_format_reward


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>2+2 is 4</think> The answer is 4.", 1.0),
        ("<think>\nreason\n</think>\n<answer>4</answer>", 1.0),
        ("  <think>x</think>\n\\boxed{4}\n", 1.0),
        ("The answer is 4.", 0.0),  # no thinking block
        ("<think>reason</think>", 0.0),  # no answer after it
        ("<think>reason</think>   \n", 0.0),
        ("<think>reason The answer is 4.", 0.0),  # unclosed
        ("preamble <think>r</think> 4", 0.0),  # text before the block
        ("<think>a</think> 4 <think>b</think> 5", 0.0),  # a second block
        ("<think><think>a</think> 4", 0.0),  # nested open tag
        ("<think>a</think><answer></answer>", 0.0),  # empty answer
        ("<think>a</think><answer>4</answer> extra", 0.0),  # text after the answer
        ("<think>a</think><answer>4", 0.0),  # unclosed answer
    ],
)
def test_think_format_reward(completion, expected):
    assert think_format_reward(["q"], [completion]) == [expected]


def test_think_opened_by_the_prompt_and_conversational_format():
    assert is_think_format("reason</think> 4", prompt="<|im_start|>assistant\n<think>\n")
    assert not is_think_format("reason</think> 4", prompt="plain prompt")
    msgs = [[{"role": "assistant", "content": "<think>r</think> 4"}], [{"role": "assistant", "content": "4"}]]
    assert think_format_reward(["q", "q"], msgs) == [1.0, 0.0]


def test_think_format_reward_length_mismatch_is_named():
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        think_format_reward(["a", "b"], ["<think>x</think> 1"])


def test_overlong_penalty_by_hand():
    # max 100, buffer 20: free up to 80, then -(L-80)/20, capped at -1 from 100 on.
    lengths = [0, 50, 80, 81, 90, 95, 100, 130]
    assert overlong_penalty(lengths, 100, 20) == pytest.approx([0, 0, 0, -0.05, -0.5, -0.75, -1.0, -1.0])
    assert overlong_penalty([90, 100], 100, 20, factor=0.5) == pytest.approx([-0.25, -0.5])
    assert overlong_penalty([0, 1, 10], 10, 10) == pytest.approx([0, -0.1, -1.0])  # buffer = whole budget


@pytest.mark.parametrize(
    "args, match",
    [(([10], 100, 0), "buffer_len"), (([10], 100, 101), "buffer_len"), (([10], 100, 20, -1.0), "factor"),
     (([5, -1], 100, 20), "length 1 is negative")],
)
def test_overlong_penalty_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        overlong_penalty(*args)
