"""Loading and calling user reward functions, and the reward transform."""

import pytest
import torch

from reinforcepp.rewards import RewardError, RewardTransform, load_reward_function, score_completions


def test_load_from_file_and_module(tmp_path):
    path = tmp_path / "my_reward.py"
    path.write_text("def reward_func(prompts, completions, **kw):\n    return [len(c) for c in completions]\n"
                    "def other(prompts, completions, **kw):\n    return [1.0] * len(completions)\n")
    assert load_reward_function(str(path))([""], ["abc"]) == [3]
    assert load_reward_function(f"{path}:other")([""], ["abc"]) == [1.0]
    fn = load_reward_function("reinforcepp.rewards.toy:target_char_share")
    assert fn(prompts=["p", "q"], completions=["aab", ""]) == [2 / 3, 0.0]
    with pytest.raises(RewardError, match="file not found"):
        load_reward_function(str(tmp_path / "missing.py"))
    with pytest.raises(RewardError, match="has no callable 'nope'"):
        load_reward_function(f"{path}:nope")


def test_columns_are_passed_and_async_functions_work():
    async def fn(prompts, completions, label):
        return [float(c == l) for c, l in zip(completions, label)]

    assert score_completions(fn, ["p", "q"], ["1", "2"], {"label": ["1", "3"]}) == [1.0, 0.0]


def test_a_raising_function_is_reported_with_the_failing_sample():
    def fn(prompts, completions):
        return [1.0 / (len(c) - 2) for c in completions]

    with pytest.raises(RewardError, match=r"failed on sample 1 \(prompt 'q', completion 'ab'\).*ZeroDivisionError"):
        score_completions(fn, ["p", "q"], ["abc", "ab"], {})


@pytest.mark.parametrize("bad", [float("nan"), "1", True])
def test_unusable_scores_name_the_sample(bad):
    with pytest.raises(RewardError, match="for sample 1"):
        score_completions(lambda completions: [0.0, bad], ["p", "q"], ["x", "y"], {})
    with pytest.raises(RewardError, match="returned 1 scores for 2"):
        score_completions(lambda completions: [0.0], ["p", "q"], ["x", "y"], {})


def test_running_normalization_matches_the_moments_of_everything_seen():
    transform = RewardTransform("running", clip=5.0, scale=2.0)
    seen = []
    for batch in (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0]), torch.tensor([0.0, 4.0])):
        transform.observe(batch)
        seen.append(batch)
        out = transform(batch)
    all_seen = torch.cat(seen).double()
    assert transform.mean == pytest.approx(all_seen.mean().item())
    assert transform.std == pytest.approx(all_seen.std(unbiased=False).item())
    expected = 2.0 * ((torch.tensor([0.0, 4.0]) - all_seen.mean()) / all_seen.std(unbiased=False)).clamp(-5, 5)
    torch.testing.assert_close(out.double(), expected.double())


def test_fixed_normalization_and_clip():
    transform = RewardTransform("fixed", mean=1.0, std=2.0, clip=1.0)
    torch.testing.assert_close(transform(torch.tensor([1.0, 3.0, 9.0])), torch.tensor([0.0, 1.0, 1.0]))
    state = transform.state_dict()
    other = RewardTransform("fixed")
    other.load_state_dict(state)
    assert other.mean == 1.0 and other.std == 2.0


def test_none_skips_a_sample_as_nan():
    import math

    out = score_completions(lambda completions: [1.0, None], ["p", "q"], ["x", "y"], {})
    assert out[0] == 1.0 and math.isnan(out[1])


def test_a_hanging_function_times_out_naming_the_sample():
    import time

    def fn(prompts, completions):
        if "slow" in completions:
            time.sleep(5)
        return [0.0] * len(completions)

    start = time.perf_counter()
    with pytest.raises(RewardError, match=r"failed on sample 1 .*'slow'.*TimeoutError"):
        score_completions(fn, ["p", "q"], ["x", "slow"], {}, timeout=0.2)
    assert time.perf_counter() - start < 2
