"""The presets shipped in reinforcepp/presets/: each loads, sets only what defines its method, and nothing else."""

from itertools import combinations
from typing import Any

import pytest
import yaml

from reinforcepp.config import Config, load_config
from reinforcepp.presets import PRESETS_DIR as CONFIGS

# The only fields a preset may set.
DEFINING = {
    "algo.advantage.estimator",
    "algo.kl.placement",
    "algo.kl.estimator",
    "critic.enabled",
    "rollout.n_samples_per_prompt",
}

EXPECTED = {
    "reinforce_pp": ("reinforce_pp", "k1", "reward", False, 1),
    "reinforce_pp_baseline": ("reinforce_pp_baseline", "k2", "loss", False, 4),
    "grpo": ("grpo", "k3", "loss", False, 4),
    "gspo": ("grpo", "k3", "loss", False, 4),
    "dr_grpo": ("dr_grpo", "k3", "loss", False, 4),
    "rloo": ("rloo", "k1", "reward", False, 4),
    "remax": ("remax", "k1", "reward", False, 1),
    "ppo": ("gae", "k1", "reward", True, 1),
}


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resolved(name: str) -> dict[str, Any]:
    return flatten(load_config(CONFIGS / f"{name}.yaml").model_dump())


# GSPO is GRPO with a sequence-level ratio, its own clip range and aggregation, and no KL.
GSPO = {"algo.kl.coef", "algo.loss.ratio_level", "algo.loss.clip_low", "algo.loss.clip_high", "algo.loss.agg"}


def allowed(name: str) -> set[str]:
    return DEFINING | {"algo.loss.agg"} if name == "dr_grpo" else DEFINING | GSPO if name == "gspo" else DEFINING


def test_every_preset_is_tested():
    assert {path.stem for path in CONFIGS.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_has_the_expected_method(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    got = (
        cfg.algo.advantage.estimator,
        cfg.algo.kl.estimator,
        cfg.algo.kl.placement,
        cfg.critic.enabled,
        cfg.rollout.n_samples_per_prompt,
    )
    assert got == EXPECTED[name]
    expected_agg = {"dr_grpo": "seq-mean-token-sum-norm", "gspo": "seq-mean-token-mean"}.get(name, "token-mean")
    assert cfg.algo.loss.agg == expected_agg


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_file_sets_exactly_its_defining_fields(name):
    raw = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert set(flatten(raw)) == allowed(name)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_differs_from_defaults_only_in_defining_fields(name):
    defaults = flatten(Config().model_dump())
    changed = {key for key, value in resolved(name).items() if defaults[key] != value}
    assert changed <= allowed(name)


@pytest.mark.parametrize(("a", "b"), list(combinations(sorted(EXPECTED), 2)))
def test_presets_differ_pairwise_only_in_defining_fields(a, b):
    left, right = resolved(a), resolved(b)
    changed = {key for key in left if left[key] != right[key]}
    assert changed and changed <= allowed(a) | allowed(b)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_header_is_a_summary_line_then_the_paper_and_the_rule_reward_kl(name):
    summary, *header = [line for line in (CONFIGS / f"{name}.yaml").read_text().splitlines() if line.startswith("#")]
    assert len(summary) <= 120 and summary.endswith(".")  # `reinforcepp presets` shows it, one line per preset
    assert 2 <= len(header) <= 4
    text = " ".join(header)
    assert "arXiv" in text and "algo.kl.coef=0.001" in text
