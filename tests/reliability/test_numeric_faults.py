"""Numerical faults (issue 14, part 1): a NaN or inf never reaches a checkpoint, a model or an optimizer
step, never vanishes from the metrics, and stops the run with one clear line when it persists.

Unit tests drive the update, the reward path and the savers directly; the end-to-end tests run the CLI on
the tiny model (``tiny_dir``) with the fault the issue reported.
"""

import copy
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from reinforcepp.algos import compute_advantages
from reinforcepp.cli import main
from reinforcepp.config import ConfigError, load_config
from reinforcepp.report.read import read_jsonl
from reinforcepp.rewards import RewardError, RewardTransform
from reinforcepp.testing import random_experience, tiny_model
from reinforcepp.train import dist, update
from reinforcepp.train.checkpoint import (
    CheckpointError,
    CheckpointState,
    complete_checkpoints,
    save_checkpoint,
    save_hf_model,
)
from reinforcepp.train.metrics import MetricsLog
from reinforcepp.train.numerics import DriftWarnings, NumericError, check_weights, to_float32
from reinforcepp.train.optim import build_optimizer
from reinforcepp.train.scoring import Scorer, check_skipped
from reinforcepp.train.sharded_checkpoint import save_sharded
from reinforcepp.train.update import Optimization, shuffled_orders, update_actor

B, LP, T, V = 8, 5, 7, 48


def config(*overrides):
    return load_config(None, ["train.batch_size=8", "train.micro_batch_size=4", "rollout.batch_size=8",
                              "rollout.max_new_tokens=7", "actor.optim.lr=1e-2", *overrides])


def optimization(cfg):
    model = tiny_model(V)
    return Optimization(model, *build_optimizer(model, cfg.actor.optim, total_steps=10), 1.0)


def experience(poison=False, seed=0):
    """Random experience with log pi_old given; ``poison``: one response token's advantage is NaN."""
    exp = random_experience(B, LP, T, V, seed)
    exp.old_logp = -torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) * exp.response_mask
    if poison:
        exp.advantages[3, 0] = math.nan
    return exp


def run_update(opt, exp, cfg):
    orders = shuffled_orders(cfg, B, torch.Generator().manual_seed(0))
    return update_actor(opt, exp, cfg, orders, step=7)


def snapshot(opt):
    """Weights, optimizer state and schedule position, copied."""
    return (copy.deepcopy(opt.model.state_dict()), copy.deepcopy(opt.optimizer.state_dict()),
            opt.scheduler.last_epoch)


def assert_same_tensors(a, b):
    """Equal, NaN-free, bitwise: nested dicts/lists of tensors and numbers."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_tensors(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_tensors(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


# --- 1. a non-finite loss or grad norm skips the optimizer step ---------------------------------------------


def test_a_nan_loss_skips_the_step_and_changes_nothing():
    cfg = config()
    opt = optimization(cfg)
    run_update(opt, experience(), cfg)  # a good step first: Adam has moments and a step count to protect
    before = snapshot(opt)
    stats = run_update(opt, experience(poison=True), cfg)
    assert stats["actor/skipped_steps"] == 1 and stats["actor/skipped_steps_total"] == 1
    assert math.isnan(stats["actor/grad_norm"]) and math.isnan(stats["actor/pg_loss"])  # logged as NaN
    assert all(p.grad is None for p in opt.model.parameters())
    assert_same_tensors(snapshot(opt), before)
    # the control: the same update without the NaN moves weights and schedule
    stats = run_update(opt, experience(), cfg)
    assert stats["actor/skipped_steps"] == 0 and opt.scheduler.last_epoch == before[2] + 1
    assert not torch.equal(opt.model.state_dict()["lm_head.weight"], before[0]["lm_head.weight"])


def test_consecutive_skips_stop_the_run_naming_step_and_quantity():
    cfg = config("train.max_skipped_steps=2")
    opt = optimization(cfg)
    run_update(opt, experience(poison=True), cfg)  # skip 1
    run_update(opt, experience(), cfg)  # a good step: the count in a row starts again
    run_update(opt, experience(poison=True), cfg)  # skip 1 again
    assert (opt.skips.consecutive, opt.skips.total) == (1, 2)
    with pytest.raises(NumericError, match=r"^step 7, actor mini-batch 1: non-finite loss and grad_norm; 2 "
                                           r"optimizer steps in a row skipped \(train.max_skipped_steps = 2\)"):
        run_update(opt, experience(poison=True), cfg)


def test_a_nan_on_another_rank_skips_the_step_here(monkeypatch):
    """The skip is one decision for all ranks (dist.all_ok), and the error names what any rank saw."""
    cfg = config("train.max_skipped_steps=2")
    opt = optimization(cfg)
    before = snapshot(opt)
    monkeypatch.setattr(dist, "all_ok", lambda ok: False)  # rank 1 saw a NaN; this rank's numbers are fine
    monkeypatch.setattr(dist, "gather_objects", lambda local: [local, ["grad_norm"]])
    stats = run_update(opt, experience(), cfg)
    assert stats["actor/skipped_steps"] == 1 and math.isfinite(stats["actor/grad_norm"])
    assert_same_tensors(snapshot(opt), before)
    with pytest.raises(NumericError, match="non-finite grad_norm;"):
        run_update(opt, experience(), cfg)


def test_overflowed_weights_stop_the_run_before_the_next_rollout():
    model = tiny_model(V)
    check_weights({"policy": model, "critic": None}, step=3)  # finite: nothing to say
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight[0, 0] = math.inf
    with pytest.raises(NumericError, match=r"^step 3: after the optimizer step, policy.model.layers.1.self_attn.o_proj."
                                           r"weight holds 1 non-finite value\(s\) \(NaN/inf\) of 4096 \(the learning "
                                           r"rate is too high\?\); the run stopped"):
        check_weights({"policy": model}, step=3)


# --- 2. nothing non-finite is saved ---------------------------------------------------------------------


def poisoned_model():
    model = tiny_model(V)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[1, 2] = math.nan
    return model


def test_a_checkpoint_with_a_nan_weight_is_refused_and_the_last_one_kept(tmp_path):
    model = tiny_model(V)
    save_checkpoint(tmp_path, 1, CheckpointState(modules={"policy": model}))
    with pytest.raises(CheckpointError, match=r"step_00000002: policy.model.layers.0.mlp.up_proj.weight holds 1 "
                                              r"non-finite value\(s\)"):
        save_checkpoint(tmp_path, 2, CheckpointState(modules={"policy": poisoned_model()}))
    assert [step for step, _ in complete_checkpoints(tmp_path)] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001"]  # no temp dir left behind


def test_a_checkpoint_with_an_inf_optimizer_state_is_refused(tmp_path):
    cfg = config()
    opt = optimization(cfg)
    run_update(opt, experience(), cfg)
    next(iter(opt.optimizer.state.values()))["exp_avg_sq"].view(-1)[0] = math.inf
    with pytest.raises(CheckpointError, match=r"optimizer.state.0.exp_avg_sq holds 1 non-finite"):
        save_checkpoint(tmp_path, 1, CheckpointState(modules={"policy": opt.model},
                                                     objects={"optimizer": opt.optimizer}))
    assert not complete_checkpoints(tmp_path)


def test_a_non_finite_number_in_a_saved_object_is_refused(tmp_path):
    transform = RewardTransform("running")
    transform.update(torch.tensor([1.0, 2.0]))
    transform.m2 = math.inf
    with pytest.raises(CheckpointError, match="reward_transform.m2 is inf"):
        save_checkpoint(tmp_path, 1, CheckpointState(objects={"reward_transform": transform}))


def test_the_final_export_refuses_nan_weights(tmp_path):
    with pytest.raises(CheckpointError, match=r"final: model.model.layers.0.mlp.up_proj.weight holds 1 "):
        save_hf_model(poisoned_model(), None, tmp_path / "final")
    assert not (tmp_path / "final").exists() and not list(tmp_path.iterdir())


def test_the_sharded_save_refuses_nan_weights(tmp_path):
    model = poisoned_model()
    with pytest.raises(CheckpointError, match=r"step_00000001: policy.model.layers.0.mlp.up_proj.weight holds 1 "):
        save_sharded(tmp_path, 1, {"policy": (model, None)}, {}, keep=None)
    assert not list(tmp_path.iterdir())


# --- 3./4. rewards: float64, float32's range, skipped samples -------------------------------------------


class _Rollout:
    """What Scorer reads of a rollout: response ids and mask."""

    def __init__(self, b):
        self.response_ids = torch.full((b, 2), 5)
        self.response_mask = torch.ones(b, 2, dtype=torch.long)


class _Tokenizer:
    def batch_decode(self, ids, skip_special_tokens=True):
        return ["x" * len(row) for row in ids]


class _Prompt:
    def __init__(self, text):
        self.row = {"prompt": text}


def score(values):
    scorer = Scorer(_Tokenizer(), function=lambda completions, **_: values)
    return scorer([_Prompt("p0"), _Prompt("p1")], _Rollout(len(values)), n=len(values) // 2)


def test_a_reward_beyond_float32_is_an_error_naming_the_sample():
    assert score([3e38, 1.0, None, -3e38]).tolist()[:2] == [pytest.approx(3e38, rel=1e-7), 1.0]
    with pytest.raises(RewardError, match=r"returned 1e\+39 for sample 3 \(prompt 'p1'\): not a finite float32"):
        score([0.0, 1.0, 2.0, 1e39])
    with pytest.raises(RewardError, match=r"returned -6e\+38 for sample 0 \(prompt 'p0'\)"):
        score([-6e38, 1.0, 2.0, 3.0])


class _RewardModel(torch.nn.Module):
    """Scores each sequence with a fixed value (a NaN from a broken reward model)."""

    def __init__(self, values):
        super().__init__()
        self.bias, self.values = torch.nn.Parameter(torch.zeros(())), torch.tensor(values)

    def score(self, input_ids, attention_mask, normalize=False):
        return self.values + self.bias


def test_a_non_finite_reward_model_score_is_an_error_naming_the_sample():
    rollout = _Rollout(4)
    rollout.prompt_ids, rollout.prompt_mask = torch.full((4, 1), 5), torch.ones(4, 1, dtype=torch.long)
    prompts = [_Prompt("p0"), _Prompt("p1")]
    ok = Scorer(_Tokenizer(), reward_model=_RewardModel([0.5, -1.0, 2.0, 0.0]))
    assert ok(prompts, rollout, n=2).tolist() == [0.5, -1.0, 2.0, 0.0]
    broken = Scorer(_Tokenizer(), reward_model=_RewardModel([0.5, -1.0, math.nan, 0.0]))
    with pytest.raises(RewardError, match=r"^the reward model returned nan for sample 2 \(prompt 'p1'\)"):
        broken(prompts, rollout, n=2)


def test_a_scaled_reward_beyond_float32_is_an_error_naming_reward_scale():
    rewards = torch.tensor([0.0, 0.25, 0.5], dtype=torch.float64)
    out = RewardTransform(scale=1e38)(rewards)
    assert out.dtype == torch.float64 and out.tolist() == [0.0, 0.25e38, 0.5e38]
    with pytest.raises(RewardError, match=r"^reward.scale: 1e\+39 x the reward 0.5 of sample 2 is 5e\+38, beyond "):
        RewardTransform(scale=1e39)(rewards)


def test_reward_scale_must_be_finite():
    with pytest.raises(ConfigError, match="reward.scale"):
        config("reward.scale=inf")


def test_rewards_of_1e30_whiten_as_rewards_of_1_in_float64():
    """REINFORCE++'s z-score is scale-free: in float64 1e30 x R gives R's advantages (float32 overflowed in the
    variance, (1e30)^2, and gave 0 everywhere: the control)."""
    exp = random_experience(B, LP, T, V)
    r = torch.rand(B, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def advantages(rewards):
        return compute_advantages("reinforce_pp", rewards=rewards, mask=exp.response_mask)[0]

    unit, huge = advantages(r), advantages(r * 1e30)
    assert unit.abs().max() > 0.5
    # both are (x - mu) / sigma of the same numbers up to the exact scale factor: float64 rounding only
    torch.testing.assert_close(huge, unit, rtol=1e-12, atol=1e-12)
    assert advantages((r * 1e30).float()).abs().max() == 0  # the float32 failure the issue reported


def test_advantages_beyond_float32_are_an_error():
    assert to_float32(torch.tensor([1e38], dtype=torch.float64), "advantages").dtype == torch.float32
    with pytest.raises(NumericError, match=r"^step 2: returns: 1e\+39 is beyond float32's range"):
        to_float32(torch.tensor([1.0, -1e39], dtype=torch.float64), "step 2: returns")


@pytest.mark.parametrize(("skipped", "fraction", "fails"), [(4, 1.0, True), (3, 1.0, False), (1, 0.25, False),
                                                            (2, 0.25, True), (1, 0.0, True), (0, 0.0, False)])
def test_max_skipped_fraction(skipped, fraction, fails):
    rewards = torch.tensor([math.nan] * skipped + [1.0] * (4 - skipped))
    if not fails:
        check_skipped(rewards, fraction, "reward function f", step=5)
        return
    with pytest.raises(RewardError, match=r"^reward function f returned None \(skip\) for .*of step 5"):
        check_skipped(rewards, fraction, "reward function f", step=5)


# --- 5. NaN/inf metrics are logged as such ---------------------------------------------------------------


def test_non_finite_metrics_are_written_and_read_back(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=True, progress=False, total_steps=2, start_step=0)
    log.log(1, {"actor/grad_norm": math.nan, "actor/pg_loss": math.inf, "kl": -math.inf, "reward/mean": 0.5})
    log.close()
    (row,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert math.isnan(row["actor/grad_norm"]) and row["actor/pg_loss"] == math.inf and row["kl"] == -math.inf
    assert row["reward/mean"] == 0.5
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert math.isnan(events.Scalars("actor/grad_norm")[0].value)


# --- 6. train.target_kl ---------------------------------------------------------------------------------


def first_minibatch_kl(cfg):
    """The update's approx KL (k3) of its first mini-batch, from an update of that one mini-batch."""
    opt = optimization(cfg)
    return run_update(opt, experience(), cfg)["actor/approx_kl_k3"]


def test_target_kl_stops_the_update_at_1_5_times_the_target():
    cfg = config("train.epochs=2")  # one mini-batch per epoch: the second sees the moved policy
    kl = first_minibatch_kl(config())
    assert kl > 0
    opt = optimization(cfg)
    before = snapshot(opt)
    stats = run_update(opt, experience(), config("train.epochs=2", f"train.target_kl={kl / 1.5 * 0.99}"))
    assert stats["actor/kl_stop_minibatch"] == 1 and opt.scheduler.last_epoch == 0
    assert_same_tensors(snapshot(opt), before)
    opt = optimization(cfg)
    stats = run_update(opt, experience(), config("train.epochs=2", f"train.target_kl={kl / 1.5 * 1.01}"))
    assert stats["actor/kl_stop_minibatch"] in (0, 2)  # the first mini-batch passed; the second may stop
    assert opt.scheduler.last_epoch >= 1


def test_without_target_kl_there_is_no_stop_metric():
    cfg = config()
    assert "actor/kl_stop_minibatch" not in run_update(optimization(cfg), experience(), cfg)


# --- 7. KL and entropy bounds warn once ------------------------------------------------------------------


def test_drift_warns_once_per_bound(caplog):
    cfg = config("train.warn_kl_above=1.0", "train.warn_entropy_below=0.01")
    drift = DriftWarnings()
    assert drift.check(cfg, 1, {"kl": 0.5, "actor/entropy": 2.0}) == []
    (kl,) = drift.check(cfg, 2, {"kl": 3.3, "actor/entropy": 2.0})
    assert kl.startswith("step 2: KL to the reference is 3.3 per token, above train.warn_kl_above = 1")
    (entropy,) = drift.check(cfg, 3, {"kl": 4.0, "actor/entropy": 0.0})
    assert entropy.startswith("step 3: policy entropy is 0 per token, below train.warn_entropy_below = 0.01")
    assert drift.check(cfg, 4, {"kl": math.nan, "actor/entropy": 0.0}) == []
    assert [r.getMessage() for r in caplog.records] == [kl, entropy]
    off = config("train.warn_kl_above=null", "train.warn_entropy_below=null")
    assert DriftWarnings().check(off, 1, {"kl": 1e9, "actor/entropy": 0.0}) == []
    assert DriftWarnings().check(cfg, 1, {"kl": math.nan})[0].startswith("step 1: KL to the reference is nan")


# --- end to end: the cases through the CLI --------------------------------------------------------


@pytest.fixture
def cli_args(tiny_dir, prompt_file, tmp_path):
    def args(*overrides):
        return ["train", f"model.policy={tiny_dir}", f"data.prompts={prompt_file}",
                "reward.function=reinforcepp.rewards.toy:target_char_share", "rollout.batch_size=4",
                "rollout.max_new_tokens=6", "train.batch_size=4", "train.micro_batch_size=4", "log.progress=false",
                "log.tensorboard=false", f"output_dir={tmp_path / 'run'}", *overrides]

    return args


def error_lines(err):
    return [line for line in err.splitlines() if line.startswith("error:") or "Traceback" in line]


def test_cli_persistent_nan_gradients_stop_with_one_line_and_finite_checkpoints(cli_args, tmp_path, capsys):
    """lr=1e30: step 1 makes weights ~1e30, every later gradient is non-finite: steps 2 and 3 are skipped (and
    checkpointed, unchanged), step 4 stops the run."""
    rc = main(cli_args("actor.optim.lr=1e30", "train.num_steps=8", "ckpt.every=1", "ckpt.keep=10"))
    err = capsys.readouterr().err
    assert rc == 2
    assert error_lines(err) == [
        "error: step 4, actor mini-batch 1: non-finite grad_norm; 3 optimizer steps in a row skipped "
        "(train.max_skipped_steps = 3): the run stopped; the checkpoints written stay intact (lower the learning "
        "rate, or the reward's scale)"
    ]
    checkpoints = complete_checkpoints(tmp_path / "run" / "checkpoints")
    assert [step for step, _ in checkpoints] == [1, 2, 3]
    weights = [load_file(path / "policy.safetensors") for _, path in checkpoints]
    for tensors in weights:
        assert all(bool(torch.isfinite(t).all()) for t in tensors.values())
    assert_same_tensors(weights[1], weights[2])  # the skipped step 3 changed nothing
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["actor/skipped_steps"] for r in rows] == [0, 1, 1]
    assert math.isfinite(rows[0]["actor/grad_norm"]) and not math.isfinite(rows[1]["actor/grad_norm"])


def test_cli_all_none_rewards_stop_naming_the_function(cli_args, tmp_path, capsys):
    reward = tmp_path / "none_reward.py"
    reward.write_text("def skip_all(completions, **_):\n    return [None] * len(completions)\n")
    rc = main(cli_args(f"reward.function={reward}:skip_all"))
    err = capsys.readouterr().err
    assert rc == 2
    (line,) = error_lines(err)
    assert line.startswith("error: reward function ") and ":skip_all returned None (skip) for all 4 samples of " \
        "step 1: there is nothing to learn from" in line


def test_cli_a_reward_of_1e39_is_one_line_naming_the_sample(cli_args, tmp_path, capsys):
    reward = tmp_path / "huge_reward.py"
    reward.write_text("def huge(completions, **_):\n    return [1e39] * len(completions)\n")
    assert main(cli_args(f"reward.function={reward}:huge")) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert ":huge returned 1e+39 for sample 0 (prompt " in line and "not a finite float32" in line


def test_cli_a_huge_reward_scale_trains_as_scale_1(cli_args, tmp_path, capsys):
    """The issue's first case (reward.scale=1e38: a NaN loss, a checkpoint all NaN). Without a KL term in the
    reward the whitened advantages do not depend on the scale: the run's updates are those of scale 1 (to float
    rounding). 5e37: the rewards go up to 6, and 6 x 5e37 is just inside float32's range."""
    reward = tmp_path / "varied.py"  # rewards that differ from the first step (the toy reward may be all 0)
    reward.write_text("def varied(completions, **_):\n    return [float(sum(map(ord, c)) % 7) for c in completions]\n")
    runs = {}
    for scale in ("1", "5e37"):
        out = tmp_path / f"scale{scale}"
        assert main(cli_args(f"reward.function={reward}:varied", f"reward.scale={scale}", "algo.kl.coef=0",
                             "train.num_steps=2", "ckpt.every=1", f"output_dir={out}")) == 0
        runs[scale] = read_jsonl(out / "metrics.jsonl")
        ((_, path),) = complete_checkpoints(out / "checkpoints")
        assert all(bool(torch.isfinite(t).all()) for t in load_file(path / "policy.safetensors").values())
    assert len(runs["1"]) == len(runs["5e37"]) == 2
    for unit, huge in zip(runs["1"], runs["5e37"]):
        assert all(math.isfinite(v) for v in huge.values()) and huge["actor/skipped_steps"] == 0
        assert huge["reward/mean"] == pytest.approx(unit["reward/mean"], rel=1e-6)  # raw R: before the scale
        # float32 rounding of the rewards' last bits moves the whitened advantages by ~1e-7 relative
        assert huge["actor/grad_norm"] == pytest.approx(unit["actor/grad_norm"], rel=1e-4)
        assert huge["advantages/std"] == pytest.approx(1.0, abs=1e-4)


def test_cli_a_diverging_learning_rate_warns_once(cli_args, tmp_path, caplog):
    """The issue's lr=10 case trained with rc 0 and said nothing; it still finishes, but says so, once each."""
    assert main(cli_args("actor.optim.lr=10", "train.num_steps=4", "algo.kl.coef=0.01")) == 0
    warned = [r.getMessage() for r in caplog.records if r.name == "reinforcepp.train.numerics"]
    assert len(warned) == 2
    assert "above train.warn_kl_above = 1" in warned[0] and "below train.warn_entropy_below" in warned[1]
    kl = [row["kl"] for row in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert sum(value > 1.0 for value in kl) >= 2  # the bound was passed more than once, warned once


def test_cli_reward_scale_past_float32_is_one_line(cli_args, tmp_path, capsys):
    reward = tmp_path / "varied.py"
    reward.write_text("def varied(completions, **_):\n    return [float(sum(map(ord, c)) % 7) for c in completions]\n")
    assert main(cli_args(f"reward.function={reward}:varied", "reward.scale=1e38")) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("error: reward.scale: 1e+38 x the reward ") and "beyond float32's range" in line
    assert not (tmp_path / "run" / "final").exists()


def test_cli_target_kl_stops_each_update_and_says_where(cli_args, tmp_path, caplog):
    """Two epochs of one mini-batch: the first starts at pi_old (KL ~1e-14), the second at the moved policy."""
    assert main(cli_args("train.epochs=2", "train.target_kl=1e-9", "train.num_steps=2")) == 0
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [row["actor/kl_stop_minibatch"] for row in rows] == [2, 2]
    stops = [r.getMessage() for r in caplog.records if "train.target_kl" in r.getMessage()]
    assert [m.split(":")[0] for m in stops] == ["step 1, actor mini-batch 2", "step 2, actor mini-batch 2"]
