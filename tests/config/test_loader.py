"""Loading YAML, applying overrides, and writing the resolved config back."""

import pytest

from reinforcepp.config import Config, ConfigError, config_to_yaml, load_config, save_config


@pytest.fixture
def write(tmp_path):
    def write(text: str, name: str = "cfg.yaml"):
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def test_no_file_means_defaults():
    assert load_config() == Config()


def test_empty_file_means_defaults(write):
    assert load_config(write("")) == Config()


def test_yaml_values_are_read(write):
    cfg = load_config(write("seed: 7\nalgo:\n  kl:\n    coef: 0.001\n"))
    assert (cfg.seed, cfg.algo.kl.coef) == (7, 0.001)


def test_yaml_exponent_without_dot_is_still_a_float(write):
    # PyYAML reads `5e-7` as a string; the schema must still accept it as a number.
    assert load_config(write("actor:\n  optim:\n    lr: 5e-7\n")).actor.optim.lr == 5e-7


@pytest.mark.parametrize(
    ("override", "read", "expected"),
    [
        ("algo.kl.coef=0.001", lambda c: c.algo.kl.coef, 0.001),
        ("algo.kl.clamp=null", lambda c: c.algo.kl.clamp, None),
        ("model.trust_remote_code=true", lambda c: c.model.trust_remote_code, True),
        ("actor.optim.betas=[0.8,0.99]", lambda c: c.actor.optim.betas, (0.8, 0.99)),
        ("critic.optim.max_grad_norm=null", lambda c: c.critic.optim.max_grad_norm, None),
        ("output_dir=runs/exp 1", lambda c: c.output_dir, "runs/exp 1"),
        ("seed=3", lambda c: c.seed, 3),
    ],
)
def test_overrides_keep_yaml_types(override, read, expected):
    value = read(load_config(overrides=[override]))
    assert value == expected and type(value) is type(expected)


def test_overrides_win_over_the_file_in_order(write):
    path = write("algo:\n  kl:\n    coef: 0.5\n")
    cfg = load_config(path, ["algo.kl.coef=0.1", "algo.kl.coef=0.2", "algo.loss.dual_clip=3"])
    assert (cfg.algo.kl.coef, cfg.algo.loss.dual_clip) == (0.2, 3.0)


def test_override_can_set_a_whole_section():
    cfg = load_config(overrides=["algo.advantage={estimator: gae, lam: 0.95}", "critic.enabled=true"])
    assert (cfg.algo.advantage.estimator, cfg.algo.advantage.lam, cfg.critic.enabled) == ("gae", 0.95, True)


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ("algo.kl.coef", "expected dotted.key=value"),
        ("=1", "expected dotted.key=value"),
        ("algo..coef=1", "expected dotted.key=value"),
        ("seed.value=1", "seed is a setting, not a section"),
        ("algo.kl.coef=[1,", "not valid YAML"),
    ],
)
def test_malformed_override_names_itself(override, why):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert repr(override) in str(info.value) and why in str(info.value)


def test_override_through_a_scalar_from_the_file(write):
    with pytest.raises(ConfigError, match=r"'algo\.kl\.coef=1': algo is 5, not a section"):
        load_config(write("algo: 5\n"), ["algo.kl.coef=1"])


def test_unknown_key_in_an_override_suggests_the_field():
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["algo.kl.coeff=0.1"])
    assert str(info.value) == "algo.kl.coeff: unknown key (did you mean 'coef'?)"


def test_unknown_key_in_yaml_suggests_the_field(write):
    with pytest.raises(ConfigError) as info:
        load_config(write("rollout:\n  temprature: 0.7\n"))
    assert str(info.value) == "rollout.temprature: unknown key (did you mean 'temperature'?)"


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n"])
def test_top_level_must_be_a_mapping(write, text):
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(text))


def test_invalid_yaml_names_the_path(write):
    path = write("algo: [\n")
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_resolved_yaml_round_trips(write):
    cfg = load_config(
        overrides=[
            "algo.advantage.estimator=gae",
            "algo.advantage.lam=0.95",
            "critic.enabled=true",
            "actor.optim.lr=1e-6",
            "actor.optim.betas=[0.8,0.99]",
            "algo.kl.clamp=null",
            "model.policy=Qwen/Qwen2.5-0.5B-Instruct",
        ]
    )
    assert cfg != Config()
    assert load_config(write(config_to_yaml(cfg))) == cfg


def test_save_config_writes_a_loadable_file(tmp_path):
    cfg = load_config(overrides=["seed=1"])
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
