"""algo.filter_groups (DAPO dynamic sampling), algo.mask_truncated and algo.kl.target in the engine: the
rounds and the groups chosen, the loss normalizer, the controller's checkpointed state, the config rules."""

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_update import one_sgd_step

from reinforcepp.config import ConfigError, load_config
from reinforcepp.presets import PRESETS_DIR
from reinforcepp.testing import random_experience, tiny_model
from reinforcepp.train.dynamic_sampling import Samples, fill_with_informative_groups
from reinforcepp.train.experience import Experience
from reinforcepp.train.loop import train
from reinforcepp.train.scoring import RoundRewards

CONFIGS = PRESETS_DIR


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def fake_round(first_prompt, rewards, width):
    """4 prompts x 2 samples; responses ``width`` wide, row b filled with token b + 3 (first_prompt offsets)."""
    B = len(rewards)
    ids = (torch.arange(B)[:, None] + 3 + 10 * first_prompt).expand(B, width).clone()
    exp = Experience(torch.ones(B, 2, dtype=torch.long), torch.ones(B, 2, dtype=torch.long), ids,
                     torch.ones(B, width, dtype=torch.long))
    r = torch.tensor(rewards, dtype=torch.float32)
    scored = RoundRewards(raw=r, filled=r, kept=torch.ones(B, dtype=torch.bool))
    return Samples(list(range(first_prompt, first_prompt + B // 2)), exp, scored, torch.ones(B, dtype=torch.bool))


FILTER_CFG = ["rollout.batch_size=4", "rollout.n_samples_per_prompt=2", "train.batch_size=8",
              "train.micro_batch_size=8", "algo.advantage.estimator=grpo", "algo.filter_groups=true"]
ROUND_0 = fake_round(0, [1, 1, 0, 1, 0, 0, 1, 0], width=3)  # groups 1 and 3 differ
ROUND_1 = fake_round(4, [0, 1, 1, 1, 1, 0, 0.5, 0.2], width=5)  # groups 0, 2 and 3 differ


def test_rounds_continue_until_the_batch_is_full_and_the_surplus_is_discarded():
    calls = []

    def next_round(k):
        calls.append(k)
        return ROUND_1

    samples, stats = fill_with_informative_groups(ROUND_0, next_round, load_config(None, FILTER_CFG), step=1)
    assert calls == [1]
    # 2 + 3 groups kept, cut to 4 in generation order: round 0's groups 1, 3; round 1's groups 0, 2
    assert samples.prompt_indices == [1, 3, 4, 6]
    assert samples.rewards.raw.tolist() == [0, 1, 1, 0, 0, 1, 1, 0]
    assert stats == {"filter/rounds": 2.0, "filter/dropped_groups": 3.0, "filter/kept_fraction": 5 / 8,
                     "filter/filled_groups": 0.0}
    # round 0's rows right-padded to round 1's width 5
    assert samples.exp.response_ids.shape == (8, 5)
    assert samples.exp.response_ids[0].tolist() == [5, 5, 5, 0, 0] and samples.exp.response_mask[0].sum() == 3
    assert samples.exp.response_ids[4].tolist() == [43] * 5  # round 1, group 0, sample 0: 0 + 3 + 10 * 4


def test_at_the_round_limit_the_first_dropped_groups_fill_the_batch():
    cfg = load_config(None, [*FILTER_CFG, "algo.filter_max_rounds=1"])
    samples, stats = fill_with_informative_groups(ROUND_0, lambda k: pytest.fail("no second round"), cfg, step=1)
    assert samples.prompt_indices == [1, 3, 0, 2]  # the 2 kept, then the 2 dropped
    assert stats["filter/rounds"] == 1.0 and stats["filter/filled_groups"] == 2.0


def test_the_loop_rolls_out_rounds_and_logs_them(make_config):
    # the toy reward (share of one character) is 0 for most samples of a random model: many equal groups
    cfg = make_config(CONFIGS / "grpo.yaml", "algo.filter_groups=true", "rollout.n_samples_per_prompt=2",
                      "train.batch_size=8")
    train(cfg)
    rows = metrics(cfg.output_dir)
    assert max(row["filter/rounds"] for row in rows) > 1
    for row in rows:
        assert row["frac_reward_zero_std"] == 0.0 or row["filter/filled_groups"] > 0
        assert 1 <= row["filter/rounds"] <= 4
        generated = 4 * row["filter/rounds"]
        assert row["filter/kept_fraction"] == pytest.approx((generated - row["filter/dropped_groups"]) / generated)


@pytest.mark.parametrize("agg, scale", [("token-mean", 1.0), ("seq-mean-token-sum-norm", 7 / 8)])
def test_a_masked_response_leaves_the_token_normalizer(agg, scale):
    # token-mean: the step equals the step without that row (the normalizer counts only the tokens the
    # mask leaves: TRL #6369). Sequence aggregations still count the row in N_seq, as TRL's grpo and dr_grpo
    # losses do (it adds 0): the step is the 7-row step times 7 / 8.
    model = tiny_model(48).double()
    exp = random_experience(8, 5, 7, 48)
    exp.advantages, exp.ref_logp = exp.advantages.double(), exp.ref_logp.double()
    exp.old_logp = exp.ref_logp + 0.1 * exp.response_mask
    cfg = load_config(None, ["rollout.batch_size=8", "train.batch_size=8", "train.micro_batch_size=4",
                             f"algo.loss.agg={agg}"])
    masked = copy.deepcopy(exp)
    masked.response_mask = masked.response_mask.clone()
    masked.response_mask[2] = 0
    without = exp.rows(torch.tensor([0, 1, 3, 4, 5, 6, 7]))
    got, want = one_sgd_step(model, masked, cfg), one_sgd_step(model, without, cfg)
    largest = max(float(w.abs().max()) for w in want)
    assert largest > 1e-5  # the step did something
    # measured: <= 1e-17 (token-mean) and 6e-12 (seq-mean, steps ~1e-4) apart; a wrong count is off by >= 1/8
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w * scale, rtol=0, atol=1e-6 * largest)


def test_mask_truncated_masks_cut_responses_and_logs_them(make_config, tmp_path):
    plain = make_config(CONFIGS / "reinforce_pp.yaml", "train.num_steps=1", f"output_dir={tmp_path / 'plain'}")
    train(plain)
    masked = make_config(CONFIGS / "reinforce_pp.yaml", "train.num_steps=1", "algo.mask_truncated=true",
                         f"output_dir={tmp_path / 'masked'}")
    train(masked)
    before, after = metrics(tmp_path / "plain")[0], metrics(tmp_path / "masked")[0]
    # the same samples (same seed); 4 responses of at most 6 tokens from a random model: most are cut
    assert after["response_length/mean"] == before["response_length/mean"]
    assert after["rollout/masked_truncated"] == 4 * after["response_length/clip_ratio"] > 0
    assert "rollout/masked_truncated" not in before


def test_adaptive_kl_resumes_bitwise_and_logs_its_coefficient(interrupted_and_resumed):
    overrides = ("train.num_steps=4", "ckpt.every=2", "rollout.n_samples_per_prompt=2", "train.batch_size=8",
                 "algo.kl.coef=0.01", "algo.kl.target=1e-6", "algo.kl.horizon=8", "algo.filter_groups=true")
    full_dir, cut_dir = interrupted_and_resumed(CONFIGS / "reinforce_pp_baseline.yaml", *overrides)
    a, b = (load_file(str(run / "final/model.safetensors")) for run in (full_dir, cut_dir))
    for name in a:
        assert torch.equal(a[name], b[name]), name
    full, resumed = metrics(full_dir), metrics(cut_dir)
    coefs = [r["kl/coef"] for r in full]
    assert [r["kl/coef"] for r in resumed] == coefs
    # n / H = 8 / 8: each step moves beta by a factor 0.8 (KL 0 at step 1: the policy is the reference) or 1.2
    assert coefs[0] == 0.01 and coefs[1] == pytest.approx(0.008, rel=1e-12)
    for prev, nxt in zip(coefs, coefs[1:]):
        assert nxt / prev == pytest.approx(0.8, rel=1e-12) or nxt / prev == pytest.approx(1.2, rel=1e-12)
    assert coefs[-1] > coefs[1]  # the KL passed the tiny target once the policy moved


@pytest.mark.parametrize("overrides, field", [
    (["algo.filter_groups=true"], "algo.filter_groups"),  # reinforce_pp: no group baseline
    (["algo.filter_groups=true", "algo.advantage.estimator=grpo"], "rollout.n_samples_per_prompt"),
    (["algo.filter_max_rounds=3"], "algo.filter_max_rounds"),
    (["algo.kl.target=0.1", "algo.kl.coef=0"], "algo.kl.target"),
    (["algo.kl.horizon=100"], "algo.kl.horizon"),
    (["algo.kl.target=0"], "algo.kl.target"),
])
def test_option_misuse_is_one_line_naming_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, ["rollout.batch_size=8", "train.batch_size=8", *overrides])
