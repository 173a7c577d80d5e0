"""The reward pipeline (train/scoring.py), by hand: skipped samples, the overlong penalty, the transform,
and ReMax's greedy baseline through the same path."""

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from reinforcepp.algos import compute_advantages
from reinforcepp.config.schema import RewardConfig
from reinforcepp.rewards import RewardError, RewardTransform
from reinforcepp.rollout import Rollout
from reinforcepp.train.experience import Experience
from reinforcepp.train.loop import train
from reinforcepp.train.scoring import RewardPipeline, check_skipped, fill_skipped

nan = math.nan
# ReMax as its preset defines it, spelled out (the test does not depend on where presets live)
REMAX = ("algo.advantage.estimator=remax", "algo.kl.estimator=k1", "algo.kl.placement=reward",
         "critic.enabled=false", "rollout.n_samples_per_prompt=1")


def test_skipped_samples_are_filled_with_their_group_mean():
    rewards = torch.tensor([1.0, nan, 0.0, 2.0, nan, nan])  # groups of 3: (1, -, 0), (2, -, -)
    filled = fill_skipped(rewards, 3)
    torch.testing.assert_close(filled, torch.tensor([1.0, 0.5, 0.0, 2.0, 2.0, 2.0]))
    # group means of the scored samples are unchanged
    assert filled.view(2, 3).mean(dim=1).tolist() == [0.5, 2.0]


def test_skipped_samples_leave_the_update():
    exp = Experience(torch.ones(6, 2, dtype=torch.long), torch.ones(6, 2, dtype=torch.long),
                     torch.ones(6, 4, dtype=torch.long), torch.ones(6, 4, dtype=torch.long))
    exp.old_logp = torch.full((6, 4), -0.5)
    exp.keep_rows(torch.isfinite(torch.tensor([1.0, nan, 0.0, 2.0, nan, nan])))
    assert exp.response_mask.sum(dim=1).tolist() == [4, 0, 4, 4, 0, 0]
    assert exp.old_logp.sum(dim=1).tolist() == [-2.0, 0.0, -2.0, -2.0, 0.0, 0.0]


def test_nothing_changes_when_every_sample_is_scored():
    rewards = torch.tensor([1.0, 0.0])
    assert fill_skipped(rewards, 2) is rewards


class _Scorer:
    """A reward source that returns the next of its prepared score lists (NaN = the function's None)."""

    name = "reward function f"

    def __init__(self, *scores):
        self.scores = [torch.tensor(s, dtype=torch.float32) for s in scores]

    def __call__(self, prompts, rollout, n):
        assert rollout.num_sequences == len(prompts) * n
        return self.scores.pop(0)


def _rollout(lengths):
    T = max(lengths)
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    B = len(lengths)
    return Rollout(torch.ones(B, 1, dtype=torch.long), torch.ones(B, 1, dtype=torch.long), mask * 5, mask,
                   torch.zeros(B, T), torch.ones(B, dtype=torch.bool))


# max_new_tokens 4, overlong buffer 2 (factor 1): length 1 or 2 -> 0, 3 -> -0.5, 4 -> -1.
# normalize fixed (mean 1, std 2), scale 3: R -> 1.5 * (R - 1).
REWARD = RewardConfig(overlong_buffer=2, normalize="fixed", mean=1.0, std=2.0, scale=3.0)


def _pipeline(scorer, reward=REWARD):
    transform = RewardTransform(reward.normalize, reward.mean, reward.std, reward.clip, reward.scale)
    return RewardPipeline(scorer, transform, reward, max_new_tokens=4)


def test_the_samples_path_by_hand():
    # 2 prompts x 2 samples; the function skips sample 2
    pipeline = _pipeline(_Scorer([1.0, 2.0, nan, 3.0]))
    out = pipeline([None, None], _rollout([1, 3, 4, 2]), 2, step=7)
    torch.testing.assert_close(out.raw, torch.tensor([1.0, 1.5, nan, 3.0]), equal_nan=True)  # + penalty [0, -.5, -1, 0]
    assert out.kept.tolist() == [True, True, False, True]
    assert out.rewards.dtype == torch.float64
    # sample 2 holds its group's scored mean (3) before the transform
    torch.testing.assert_close(out.rewards, torch.tensor([0.0, 0.75, 3.0, 3.0], dtype=torch.float64))
    assert out.greedy is None and out.metrics() == {}


def test_remax_baseline_takes_the_samples_path_and_a_skipped_one_drops_its_prompt(caplog):
    # greedy responses: prompt 0 scored 2 at length 4 (penalty -1), prompt 1 skipped by the function
    pipeline = _pipeline(_Scorer([1.0, 2.0, 4.0, 3.0], [2.0, nan]))
    with caplog.at_level(logging.WARNING):
        out = pipeline([None, None], _rollout([1, 3, 4, 2]), 2, step=7, greedy=_rollout([4, 1]))
    # prompt 0: baseline R = 2 - 1 = 1 -> transformed 0, penalty and transform as the samples'
    torch.testing.assert_close(out.greedy[:2], torch.tensor([0.0, 0.0], dtype=torch.float64))
    # prompt 1: no baseline; its samples leave the update, their own R stands in (advantage 0, finite)
    assert out.kept.tolist() == [True, True, False, False]
    assert out.skipped_baselines == 1 and out.metrics() == {"reward/skipped_baselines": 1.0}
    assert "greedy response of 1 prompt(s)" in caplog.text
    mask = torch.ones(4, 3)
    advantages, _ = compute_advantages("remax", rewards=out.rewards, mask=mask * out.kept[:, None],
                                       group_size=2, greedy_rewards=out.greedy)
    assert bool(torch.isfinite(advantages).all())
    # R - b by hand: samples of prompt 0 are 1.5*(1-1) - 0 and 1.5*(1.5-1) - 0 on their last token
    assert advantages[:, 0].tolist() == [0.0, 0.75, 0.0, 0.0]


def test_every_baseline_skipped_is_an_error_naming_the_function():
    pipeline = _pipeline(_Scorer([1.0, 2.0], [nan, nan]))
    with pytest.raises(RewardError, match=r"^reward function f returned None \(skip\) for 0 of 2 samples of step 3 "
                                          r"and for greedy baselines, so 2 of 2 samples leave the update: there is "
                                          r"nothing to learn from"):
        pipeline([None, None], _rollout([1, 1]), 1, step=3, greedy=_rollout([1, 1]))


def test_samples_without_a_baseline_count_toward_max_skipped_fraction():
    raw = torch.tensor([1.0, nan, 2.0, 3.0])
    kept = torch.tensor([True, False, False, True])  # sample 2 lost its baseline
    check_skipped(raw, 0.5, "reward function f", 5, kept)
    with pytest.raises(RewardError, match=r"1 of 4 samples of step 5 and for greedy baselines, so 2 of 4 samples "
                                          r"leave the update, more than reward.max_skipped_fraction = 0.25"):
        check_skipped(raw, 0.25, "reward function f", 5, kept)


def test_a_skipped_greedy_baseline_drops_its_group_and_is_counted(make_config, tmp_path):
    # ReMax, one sample per prompt: the loop scores the samples, then the greedy responses (calls 1, 2 per step);
    # the function skips (None) the greedy response of the first prompt. ReMax is not whitened, so a NaN
    # baseline used to reach the loss as a NaN advantage.
    reward = tmp_path / "skip_greedy.py"
    reward.write_text(
        "calls = []\n"
        "def reward_func(prompts, completions, **kw):\n"
        "    calls.append(len(completions))\n"
        "    greedy = len(calls) % 2 == 0\n"
        "    return [None if greedy and i == 0 else float(len(c) % 3) for i, c in enumerate(completions)]\n"
    )
    cfg = make_config(None, *REMAX, f"reward.function={reward}")
    train(cfg)
    rows = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        assert math.isfinite(row["actor/pg_loss"]), row
        assert math.isfinite(row["advantages/mean"]), row
        assert row["reward/skipped_baselines"] == 1  # one prompt of four lost its baseline: its sample left
        assert row["reward/skipped"] == 0  # every sample itself was scored


def test_the_loop_hands_compute_advantages_the_rewards_computed_by_hand(make_config, tmp_path, monkeypatch):
    # An independent expectation of what reaches the estimator: from what the reward function saw, by hand,
    # R = scale * (f + overlong penalty - mean) / std, for the samples and (ReMax) the greedy responses alike.
    reward = tmp_path / "recording.py"
    log = tmp_path / "calls.jsonl"
    reward.write_text(
        "import json\n"
        "def reward_func(prompts, completions, completion_ids, **kw):\n"
        "    scores = [float(len(c) % 3) for c in completions]\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(json.dumps([scores, [len(ids) for ids in completion_ids]]) + '\\n')\n"
        "    return scores\n"
    )
    seen = []

    def spy(estimator, **kwargs):
        seen.append(kwargs)
        return compute_advantages(estimator, **kwargs)

    monkeypatch.setattr("reinforcepp.train.loop.compute_advantages", spy)
    cfg = make_config(None, *REMAX, f"reward.function={reward}", "train.num_steps=1",
                      "rollout.n_samples_per_prompt=2", "reward.overlong_buffer=4", "reward.overlong_factor=0.5",
                      "reward.normalize=fixed", "reward.mean=0.25", "reward.std=2.0", "reward.scale=3.0")
    train(cfg)
    (samples, sample_lengths), (greedy, greedy_lengths) = map(json.loads, log.read_text().splitlines())

    def by_hand(score, length):  # max_new_tokens 6, buffer 4: the penalty starts after 2 tokens
        penalty = -min(max(length - 2, 0), 4) / 4 * 0.5
        return 3.0 * (score + penalty - 0.25) / 2.0

    want = torch.tensor([by_hand(s, n) for s, n in zip(samples, sample_lengths)], dtype=torch.float64)
    want_greedy = torch.tensor([by_hand(s, n) for s, n in zip(greedy, greedy_lengths)], dtype=torch.float64)
    (kwargs,) = seen
    torch.testing.assert_close(kwargs["rewards"], want, rtol=0, atol=1e-6)  # float32 raw rewards: ~1e-7
    torch.testing.assert_close(kwargs["greedy_rewards"], want_greedy.repeat_interleave(2), rtol=0, atol=1e-6)
