"""The config tree: defaults, field constraints, cross-field rules, and how errors read."""

import warnings
from typing import Any

import pytest
from pydantic import ValidationError

from reinforcepp.config import Config, ConfigError, ConfigWarning, validate_config


def nested(dotted: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}, so cases read like CLI overrides."""
    data: dict[str, Any] = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return data


def problems_of(dotted: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_config(nested(dotted))
    return str(info.value).splitlines()


def test_defaults_are_the_paper_table():
    cfg = Config()
    assert cfg == validate_config({})
    assert cfg.algo.advantage.estimator == "reinforce_pp"
    assert (cfg.algo.kl.coef, cfg.algo.kl.estimator, cfg.algo.kl.placement) == (0.01, "k1", "reward")
    assert (cfg.algo.loss.clip_low, cfg.algo.loss.clip_high) == (0.2, 0.2)
    assert (cfg.rollout.batch_size, cfg.train.batch_size, cfg.rollout.max_new_tokens) == (256, 128, 1024)
    assert (cfg.actor.optim.lr, cfg.critic.optim.lr) == (5e-7, 9e-6)
    assert cfg.actor.optim.betas == (0.9, 0.95)


def test_partial_optim_section_keeps_the_role_default_lr():
    cfg = validate_config(nested({"actor.optim.weight_decay": 0.1, "critic.optim.weight_decay": 0.1}))
    assert (cfg.actor.optim.lr, cfg.critic.optim.lr) == (5e-7, 9e-6)


@pytest.mark.parametrize(
    ("dotted", "path"),
    [
        ({"algo.loss.clip_low": 0}, "algo.loss.clip_low"),
        ({"algo.loss.clip_low": -0.1}, "algo.loss.clip_low"),
        ({"algo.loss.clip_high": 0}, "algo.loss.clip_high"),
        ({"algo.loss.dual_clip": 1.0}, "algo.loss.dual_clip"),
        ({"algo.loss.entropy_coef": -0.01}, "algo.loss.entropy_coef"),
        ({"algo.advantage.estimator": "reinforce++"}, "algo.advantage.estimator"),
        ({"algo.advantage.gamma": 1.5}, "algo.advantage.gamma"),
        ({"algo.kl.coef": -1}, "algo.kl.coef"),
        ({"algo.kl.estimator": "k4"}, "algo.kl.estimator"),
        ({"algo.kl.clamp": 0}, "algo.kl.clamp"),
        ({"rollout.temperature": 0}, "rollout.temperature"),
        ({"rollout.top_p": 0}, "rollout.top_p"),
        ({"rollout.top_p": 1.5}, "rollout.top_p"),
        ({"rollout.top_k": -1}, "rollout.top_k"),
        ({"rollout.batch_size": 0}, "rollout.batch_size"),
        ({"rollout.max_batch_tokens": 0}, "rollout.max_batch_tokens"),
        ({"rollout.max_batch_tokens": -512}, "rollout.max_batch_tokens"),
        ({"model.dtype": "float16"}, "model.dtype"),
        ({"model.reference_dtype": "float16"}, "model.reference_dtype"),
        ({"train.autocast": "float16"}, "train.autocast"),
        ({"actor.optim.lr": 0}, "actor.optim.lr"),
        ({"actor.optim.betas": [1.0, 0.95]}, "actor.optim.betas.0"),
        ({"critic.optim.warmup_ratio": 1.0}, "critic.optim.warmup_ratio"),
        ({"critic.value_clip": 0}, "critic.value_clip"),
    ],
)
def test_field_constraints_name_the_field(dotted, path):
    (line,) = problems_of(dotted)
    assert line.startswith(f"{path}: ")


@pytest.mark.parametrize("estimator", ["reinforce_pp_baseline", "grpo", "dr_grpo", "rloo"])
def test_group_estimators_need_several_samples(estimator):
    (line,) = problems_of({"algo.advantage.estimator": estimator})
    assert line.startswith("rollout.n_samples_per_prompt: ")
    assert estimator in line and "every advantage is 0" in line
    validate_config(nested({"algo.advantage.estimator": estimator, "rollout.n_samples_per_prompt": 2}))


def test_samples_per_step_must_split_into_train_batches():
    (line,) = problems_of({"rollout.batch_size": 100})
    assert line.startswith("train.batch_size: ")
    assert "100 * 1 = 100" in line and "train.batch_size = 128" in line


def test_train_batch_must_split_into_micro_batches():
    (line,) = problems_of({"train.micro_batch_size": 7})
    assert line.startswith("train.micro_batch_size: ")
    assert "train.batch_size = 128" in line and "train.micro_batch_size = 7" in line


def test_k1_as_loss_is_rejected_with_the_fix():
    (line,) = problems_of({"algo.kl.placement": "loss"})
    assert line.startswith("algo.kl.estimator: ") and "k2" in line and "reward" in line


def test_k1_as_loss_without_kl_is_fine():
    assert validate_config(nested({"algo.kl.placement": "loss", "algo.kl.coef": 0})).algo.kl.coef == 0


def test_unbiased_kl_gradient_makes_k1_a_working_loss():
    cfg = validate_config(nested({"algo.kl.placement": "loss", "algo.kl.unbiased_gradient": True}))
    assert cfg.algo.kl.applied_to == "loss"


@pytest.mark.parametrize("dotted", [{}, {"algo.kl.coef": 0, "algo.kl.placement": "loss"}])
def test_unbiased_kl_gradient_needs_the_kl_in_the_loss(dotted):
    (line,) = problems_of({**dotted, "algo.kl.unbiased_gradient": True})
    assert line.startswith("algo.kl.unbiased_gradient: ") and "placement='loss'" in line


@pytest.mark.parametrize(("dotted", "where"), [
    ({}, "reward"), ({"algo.kl.placement": "loss", "algo.kl.estimator": "k3"}, "loss"), ({"algo.kl.coef": 0}, None),
])
def test_the_kl_goes_to_one_place(dotted, where):
    assert validate_config(nested(dotted)).algo.kl.applied_to == where


def test_tis_needs_recomputed_old_logprobs():
    (line,) = problems_of({"algo.loss.tis_cap": 2.0, "train.old_logprobs": "rollout"})
    assert line.startswith("algo.loss.tis_cap: ") and "recompute" in line
    validate_config(nested({"algo.loss.tis_cap": 2.0, "train.old_logprobs": "recompute"}))
    (line,) = problems_of({"algo.loss.tis_cap": 0.5})
    assert line.startswith("algo.loss.tis_cap: ")


def test_ratio_level_is_token_or_sequence():
    (line,) = problems_of({"algo.loss.ratio_level": "batch"})
    assert line.startswith("algo.loss.ratio_level: ")


def test_gae_needs_a_critic():
    (line,) = problems_of({"algo.advantage.estimator": "gae"})
    assert line.startswith("critic.enabled: ") and "gae" in line


def test_a_critic_needs_gae():
    (line,) = problems_of({"critic.enabled": True})
    assert line.startswith("critic.enabled: ") and "'reinforce_pp'" in line


def test_lam_only_applies_to_gae():
    (line,) = problems_of({"algo.advantage.lam": 0.95})
    assert line.startswith("algo.advantage.lam: ")
    cfg = validate_config(
        nested({"algo.advantage.estimator": "gae", "algo.advantage.lam": 0.95, "critic.enabled": True})
    )
    assert cfg.algo.advantage.lam == 0.95


def test_token_norm_only_applies_to_sum_norm_agg():
    (line,) = problems_of({"algo.loss.token_norm": 512})
    assert line.startswith("algo.loss.token_norm: ") and "seq-mean-token-sum-norm" in line
    cfg = validate_config(nested({"algo.loss.token_norm": 512, "algo.loss.agg": "seq-mean-token-sum-norm"}))
    assert cfg.algo.loss.token_norm == 512


def test_reference_dtype_needs_a_reference_and_no_float32_copy_of_a_bf16_policy():
    (line,) = problems_of({"model.reference_dtype": "bfloat16", "algo.kl.coef": 0})
    assert line.startswith("model.reference_dtype: ") and "loads no reference" in line
    (line,) = problems_of({"model.reference_dtype": "float32", "model.dtype": "bfloat16"})
    assert line.startswith("model.reference_dtype: ") and "use 'auto'" in line
    for dtype in ("auto", "float32"):  # a bf16 reference for a float32 policy: the memory-saving choice
        assert validate_config(nested({"model.reference_dtype": "bfloat16", "model.dtype": dtype}))


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"algo": {"kl": {"coeff": 0.1}}}, "algo.kl.coeff: unknown key (did you mean 'coef'?)"),
        ({"modle": {}}, "modle: unknown key (did you mean 'model'?)"),
        ({"rollout": {"zzz": 1}}, "rollout.zzz: unknown key"),
    ],
)
def test_unknown_keys_suggest_the_closest_field(data, line):
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    assert str(info.value) == line


def test_field_errors_are_reported_together():
    lines = problems_of({"algo.loss.clip_low": 0, "rollout.top_p": 2, "algo.kl.coeff": 1})
    assert len(lines) == 3
    assert {line.split(":")[0] for line in lines} == {"algo.loss.clip_low", "rollout.top_p", "algo.kl.coeff"}


def test_cross_field_errors_are_reported_together():
    lines = problems_of(
        {"algo.advantage.estimator": "grpo", "algo.advantage.lam": 0.9, "train.micro_batch_size": 7}
    )
    paths = [line.split(":")[0] for line in lines]
    assert paths == ["rollout.n_samples_per_prompt", "train.micro_batch_size", "algo.advantage.lam"]


@pytest.mark.parametrize("estimator", ["k2", "k3"])
def test_k2_k3_in_the_reward_warns(estimator):
    with pytest.warns(ConfigWarning, match=r"algo\.kl\.estimator: .*only for k1"):
        validate_config(nested({"algo.kl.estimator": estimator}))


@pytest.mark.parametrize(
    "dotted", [{"algo.kl.estimator": "k1"}, {"algo.kl.estimator": "k2", "algo.kl.coef": 0}]
)
def test_no_warning_when_the_reward_kl_is_unbiased_or_off(dotted):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_config(nested(dotted))


def test_assignment_is_validated_too():
    cfg = Config()
    with pytest.raises(ValidationError):
        cfg.rollout.temperature = 0
    assert cfg.rollout.temperature == 1.0


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_fixed_reward_moments_only_with_fixed_normalization():
    with pytest.raises(ConfigError, match="reward.mean/reward.std"):
        validate_config({"reward": {"mean": 1.0}})
    assert validate_config({"reward": {"normalize": "fixed", "mean": 1.0}}).reward.mean == 1.0


def test_eval_every_needs_eval_prompts():
    with pytest.raises(ConfigError, match="train.eval_every: .*data.eval_prompts"):
        validate_config({"train": {"eval_every": 5}})


def test_min_new_tokens_at_most_max_new_tokens():
    with pytest.raises(ConfigError, match="rollout.min_new_tokens: 9 is more than rollout.max_new_tokens = 8"):
        validate_config({"rollout": {"min_new_tokens": 9, "max_new_tokens": 8}})
    assert validate_config({"rollout": {"min_new_tokens": 8, "max_new_tokens": 8}}).rollout.min_new_tokens == 8
