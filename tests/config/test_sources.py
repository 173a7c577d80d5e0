"""Where a config comes from: presets by name from any directory, `preset:` under a file's own fields, and
the rule that tells a preset name from a file path."""

import pytest
import yaml

from reinforcepp.cli import main
from reinforcepp.config import ConfigError, load_config
from reinforcepp.presets import PRESETS_DIR, preset_names


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_preset_by_name_is_its_shipped_file_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in preset_names():
        assert load_config(name) == load_config(PRESETS_DIR / f"{name}.yaml")


def test_a_bare_word_is_the_preset_even_beside_a_file_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "grpo", {"seed": 3})
    write(tmp_path / "grpo.yaml", {"seed": 4})
    assert load_config("grpo").algo.advantage.estimator == "grpo" and load_config("grpo").seed == 42
    assert load_config("grpo.yaml").seed == 4  # a suffix makes a path
    assert load_config("./grpo").seed == 3  # so does a '/'


def test_layers_preset_then_file_then_overrides(tmp_path):
    path = write(tmp_path / "mine.yaml", {"preset": "grpo", "rollout": {"n_samples_per_prompt": 8, "top_k": 5},
                                          "algo": {"kl": {"coef": 0.001}}})
    cfg = load_config(path, ["rollout.top_k=7"])
    assert cfg.algo.advantage.estimator == "grpo" and cfg.algo.kl.placement == "loss"  # the preset's
    assert (cfg.rollout.n_samples_per_prompt, cfg.algo.kl.coef) == (8, 0.001)  # the file beats the preset
    assert cfg.rollout.top_k == 7  # the override beats the file


def test_a_preset_path_is_relative_to_the_file_that_names_it_and_may_name_a_preset_itself(tmp_path, monkeypatch):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "team.yaml", {"preset": "rloo", "algo": {"kl": {"coef": 0.002}}})
    path = write(tmp_path / "run.yaml", {"preset": "base/team.yaml", "seed": 5})
    monkeypatch.chdir(PRESETS_DIR)  # anywhere but tmp_path
    cfg = load_config(path)
    assert (cfg.algo.advantage.estimator, cfg.algo.kl.coef, cfg.seed) == ("rloo", 0.002, 5)


def test_presets_that_name_each_other_in_a_loop_are_an_error(tmp_path):
    write(tmp_path / "a.yaml", {"preset": "b.yaml"})
    write(tmp_path / "b.yaml", {"preset": "a.yaml"})
    with pytest.raises(ConfigError, match="name each other in a loop"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize(("data", "overrides", "message"), [
    ({"preset": "grpoo"}, [], "preset 'grpoo': no such preset; presets: dr_grpo, grpo, "),
    ({"preset": "missing.yaml"}, [], "config file not found: "),
    ({"preset": 3}, [], "preset: expected a preset name or a YAML file path, got 3"),
    ({}, ["preset=grpo"], "override 'preset=grpo': a preset lies under the config"),
])
def test_bad_presets_are_one_line_naming_the_culprit(tmp_path, capsys, data, overrides, message):
    path = write(tmp_path / "mine.yaml", data)
    assert main(["config", "--config", str(path), *overrides]) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err and err.count("\n") == 1


def test_an_unknown_preset_name_lists_the_presets_and_how_to_name_a_file(capsys):
    assert main(["config", "--config", "my_config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: preset 'my_config': no such preset") and "ending in .yaml" in err


def test_presets_command_lists_each_preset_on_one_line_with_its_summary(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == preset_names()
    grpo = next(line for line in lines if line.startswith("grpo "))
    assert "GRPO: " in grpo and "4 samples" in grpo
