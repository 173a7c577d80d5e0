"""Evaluation inside the loop: the starting policy at step 0, training-prompt evaluation, pass@1 by a
prompt column, and the per-prompt reward log."""

import json
from pathlib import Path

import pytest

from reinforcepp.eval import EvalResult
from reinforcepp.eval.command import evaluate_model
from reinforcepp.presets import PRESETS_DIR
from reinforcepp.train.loop import train
from reinforcepp.train.metrics import PROMPT_REWARDS

CONFIGS = PRESETS_DIR


def records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture
def grouped_prompts(tmp_path):
    # the 'size' column groups prompts 3 / 3 / 2
    rows = [{"prompt": p, "size": s} for p, s in
            [("ab", 1), ("hello", 1), ("x", 1), ("12+3=", 2), ("say a", 2), ("go", 2), ("what", 3), ("aa", 3)]]
    path = tmp_path / "grouped.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_step_zero_is_the_starting_policy_with_the_final_evaluation_settings(make_config, grouped_prompts, tiny_dir):
    eval_settings = (f"data.eval_prompts={grouped_prompts}", "eval.samples_per_prompt=3", "eval.temperature=1.0",
                     "eval.pass_threshold=0.1")
    cfg = make_config(CONFIGS / "reinforce_pp.yaml", "train.eval_every=2", *eval_settings)
    train(cfg)
    rows = records(Path(cfg.output_dir) / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert "reward/mean" not in rows[0]  # step 0 holds the evaluation only

    # `reinforcepp eval` of the untrained model gives exactly step 0's numbers (same prompts, seed, sampler)
    before = evaluate_model(make_config(None, f"model.policy={tiny_dir}", *eval_settings,
                                        f"output_dir={Path(cfg.output_dir) / 'eval0'}"))
    for result in before:
        for key, value in result.metrics().items():
            assert rows[0][key] == pytest.approx(value, abs=1e-12), key


def test_no_step_zero_when_turned_off(make_config, grouped_prompts):
    cfg = make_config(CONFIGS / "reinforce_pp.yaml", "train.eval_every=1", f"data.eval_prompts={grouped_prompts}",
                      "eval.before_training=false")
    train(cfg)
    assert [r["step"] for r in records(Path(cfg.output_dir) / "metrics.jsonl")] == [1, 2]


def test_training_prompt_evaluation_and_pass_rate_by_group(make_config, grouped_prompts):
    cfg = make_config(CONFIGS / "reinforce_pp.yaml", "train.eval_every=2", f"data.eval_prompts={grouped_prompts}",
                      f"data.prompts={grouped_prompts}", "eval.train_prompts=5", "eval.group_key=size",
                      "eval.samples_per_prompt=4", "eval.temperature=1.0", "eval.pass_threshold=0.2")
    train(cfg)
    last = records(Path(cfg.output_dir) / "metrics.jsonl")[-1]
    for mode in ("greedy", "sampled"):
        groups = [last[f"eval/{mode}/by_size/{s}/pass@1"] for s in (1, 2, 3)]
        # the prompt-weighted mean of the group rates is the overall pass@1
        assert (3 * groups[0] + 3 * groups[1] + 2 * groups[2]) / 8 == pytest.approx(last[f"eval/{mode}/pass@1"])
        assert f"eval_train/{mode}/pass@1" in last
        assert f"eval_train/{mode}/by_size/3/pass@1" not in last  # the first 5 training prompts: sizes 1, 2


def test_grouped_metrics_by_hand():
    result = EvalResult("sampled", 4, 2, 0.5, 3.0, 0.1, {1: 0.5}, prompt_pass_rates=[1.0, 0.5, 0.0, 0.5])
    assert result.grouped_metrics("people", [3, 3, 4, 5]) == {
        "eval/sampled/by_people/3/pass@1": 0.75,
        "eval/sampled/by_people/4/pass@1": 0.0,
        "eval/sampled/by_people/5/pass@1": 0.5,
    }
    with pytest.raises(ValueError, match="3 values for 4 prompts"):
        result.grouped_metrics("people", [3, 3, 4])


def test_prompt_rewards_log_every_sampled_prompt(make_config):
    cfg = make_config(CONFIGS / "grpo.yaml", "log.prompt_rewards=true", "rollout.n_samples_per_prompt=2")
    train(cfg)
    run_dir = Path(cfg.output_dir)
    lines = records(run_dir / PROMPT_REWARDS)
    steps = records(run_dir / "metrics.jsonl")
    assert [line["step"] for line in lines] == [1] * 4 + [2] * 4  # 4 prompts per step
    for step in steps:
        rewards = [r for line in lines if line["step"] == step["step"] for r in line["rewards"]]
        assert len(rewards) == 8
        assert sum(rewards) / 8 == pytest.approx(step["reward/mean"])
    assert all(0 <= line["prompt"] < 8 for line in lines)


def test_max_prompts_trains_on_the_first_prompts_only(make_config):
    cfg = make_config(CONFIGS / "reinforce_pp.yaml", "data.max_prompts=3", "log.prompt_rewards=true",
                      "train.num_steps=3")
    train(cfg)
    seen = {line["prompt"] for line in records(Path(cfg.output_dir) / PROMPT_REWARDS)}
    assert seen == {0, 1, 2}  # 12 samples over 3 steps, all from the first 3 of 8 prompts
