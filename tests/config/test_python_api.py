"""The Python API: load_config takes a preset, a file, a mapping or a Config, with overrides as a dict or
dotted strings; every check runs before any model loads; docs/python_api.md runs as written."""

import re
import warnings
from pathlib import Path

import pytest

import reinforcepp
from reinforcepp.config import Config, ConfigError, load_config
from reinforcepp.presets import preset_names

DOC = Path(__file__).resolve().parents[2] / "docs" / "python_api.md"
GROUP_ERROR = "rollout.n_samples_per_prompt: algo.advantage.estimator='grpo' needs at least 2 samples per prompt"


def reward(completions, **kwargs):
    return [0.0 for _ in completions]


def test_dict_overrides_take_python_values_and_dotted_strings_take_yaml():
    from_dict = load_config("grpo", {"algo.kl.coef": 0.001, "reward.function": reward, "algo.kl.clamp": None})
    from_strings = load_config("grpo", ["algo.kl.coef=0.001", "algo.kl.clamp=null"])
    assert from_dict.reward.function is reward
    assert from_dict.model_copy(update={"reward": from_strings.reward}) == from_strings
    assert load_config(overrides="seed=3").seed == 3  # one string is one override


def test_a_mapping_source_may_name_a_preset_and_is_not_modified():
    data = {"preset": "rloo", "algo": {"kl": {"coef": 0.002}}}
    cfg = load_config(data, {"algo.kl.coef": 0.003, "rollout.top_k": 2})
    assert (cfg.algo.advantage.estimator, cfg.algo.kl.coef, cfg.rollout.top_k) == ("rloo", 0.003, 2)
    assert data == {"preset": "rloo", "algo": {"kl": {"coef": 0.002}}}


@pytest.mark.parametrize("name", preset_names())
def test_a_config_loads_back_to_itself(name):
    cfg = load_config(name, {"reward.function": reward})
    assert load_config(cfg) == cfg and load_config(cfg) is not cfg


def test_a_config_edited_into_a_broken_rule_fails_when_checked_again():
    cfg = load_config("reinforce_pp")
    cfg.algo.advantage.estimator = "grpo"  # a section checks only its own fields
    with pytest.raises(ConfigError, match=re.escape(GROUP_ERROR)):
        load_config(cfg)


@pytest.mark.parametrize("how", ["dict", "strings", "edited"])
def test_train_checks_the_whole_config_before_any_model_loads(tmp_path, how):
    missing = {"model.policy": str(tmp_path / "no-such-model"), "output_dir": str(tmp_path / "run")}
    with pytest.raises(ConfigError, match=re.escape(GROUP_ERROR)):
        if how == "dict":
            reinforcepp.train("reinforce_pp", {**missing, "algo.advantage.estimator": "grpo"})
        elif how == "strings":
            reinforcepp.train("reinforce_pp", [f"{k}={v}" for k, v in missing.items()]
                              + ["algo.advantage.estimator=grpo"])
        else:
            cfg = load_config("reinforce_pp", missing)
            cfg.algo.advantage.estimator = "grpo"
            reinforcepp.train(cfg)
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.parametrize(("config", "overrides", "message"), [
    (3, (), "config: expected a preset name, a YAML file path, a mapping or a Config, got int"),
    (None, [("seed", 1)], "override ('seed', 1): expected 'dotted.key=value'"),
    (None, {"seed.x": 1}, "override 'seed.x': seed is a setting, not a section"),
    (None, {"algo.kl.coeff": 1}, "algo.kl.coeff: unknown key (did you mean 'coef'?)"),
])
def test_bad_api_input_is_a_config_error_naming_the_culprit(config, overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(config, overrides)
    assert str(info.value) == message or str(info.value).startswith(message)


def python_cells(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_python_api_doc_runs_as_written(tmp_path, monkeypatch, capsys):
    cells = python_cells(DOC.read_text())
    assert len(cells) >= 6
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", reinforcepp.config.ConfigWarning)  # the example is clean
        for number, cell in enumerate(cells, start=1):
            exec(compile(cell, f"{DOC.name} cell {number}", "exec"), namespace)  # noqa: S102 - our own doc
    out = capsys.readouterr().out
    assert out.count(GROUP_ERROR) == 2  # from load_config and from train, each before any model loaded
    assert "reinforce_pp 1" in out and "runs/api-example/run/final" in out
    assert (tmp_path / "runs/api-example/run/final/config.json").is_file()
    assert isinstance(namespace["cfg"], Config)


def test_reinforcepp_train_stays_the_checked_function_after_the_engine_is_imported(tmp_path):
    import reinforcepp.train.loop  # noqa: F401 - binds the package reinforcepp.train over the function

    from reinforcepp import train  # as a notebook cell run again after a first training does

    with pytest.raises(ConfigError, match=re.escape(GROUP_ERROR)):
        train("reinforce_pp", {"algo.advantage.estimator": "grpo", "output_dir": str(tmp_path / "run")})
