"""Experiment files of `reinforcepp compare`: parsing, the merge order of the config layers, and the errors
that must stop a comparison before anything trains."""

import pytest
import yaml

from reinforcepp.cli import main
from reinforcepp.compare import default_output, load_experiment_spec, plan, preset_names
from reinforcepp.config import ConfigError


def test_experiment_file_resolves_every_label_and_seed(write_experiment, tmp_path):
    path = write_experiment(title="t", seeds=[1, 2])
    experiment = plan(path, output=tmp_path / "out")
    assert [(r.label, r.seed) for r in experiment.runs] == [("REINFORCE++", 1), ("REINFORCE++", 2), ("GRPO", 1),
                                                            ("GRPO", 2)]
    assert experiment.runs[0].run_dir == tmp_path / "out" / "REINFORCE__" / "seed1"
    assert experiment.runs[2].cfg.algo.advantage.estimator == "grpo"
    assert all(r.cfg.log.prompt_rewards for r in experiment.runs)  # forced on: the report draws per-prompt curves
    assert not (tmp_path / "out").exists()  # planning writes nothing


def test_seeds_default_to_the_config_seed_and_the_command_line_beats_the_file(write_experiment, shared_config,
                                                                               tmp_path):
    shared_config["seed"] = 7
    assert {r.seed for r in plan(write_experiment(), output=tmp_path / "o").runs} == {7}
    assert {r.seed for r in plan(write_experiment(seeds=[1]), output=tmp_path / "o", seeds=[3, 4]).runs} == {3, 4}


def test_merge_order_run_beats_experiment_beats_preset_beats_shared(write_experiment, shared_config, tmp_path):
    shared_config["rollout"].update(temperature=0.7, top_p=0.9)
    (tmp_path / "custom.yaml").write_text(yaml.safe_dump(
        {"algo": {"kl": {"coef": 0.1}, "loss": {"clip_low": 0.3, "entropy_coef": 0.01}}}))
    path = write_experiment(
        runs={"A": {"preset": "custom.yaml", "overrides": ["algo.loss.entropy_coef=0.03", "rollout.top_k=7"]},
              "B": {"preset": "custom.yaml", "overrides": ["log.prompt_rewards=false"]}},
        overrides=["rollout.top_p=0.8", "algo.loss.clip_low=0.25", "algo.loss.entropy_coef=0.02"],
    )
    a, b = (r.cfg for r in plan(path, output=tmp_path / "o", overrides=["rollout.top_k=9"]).runs)
    assert a.rollout.temperature == 0.7  # shared
    assert a.algo.kl.coef == 0.1  # preset
    assert a.rollout.top_p == 0.8  # experiment override beats shared
    assert a.algo.loss.clip_low == 0.25  # experiment override beats preset
    assert (a.algo.loss.entropy_coef, b.algo.loss.entropy_coef) == (0.03, 0.02)  # run override beats experiment's
    assert (a.rollout.top_k, b.rollout.top_k) == (9, 9)  # command line beats run override
    assert (a.log.prompt_rewards, b.log.prompt_rewards) == (True, False)  # the user's choice is kept


def test_inline_shared_config(shared_config, tmp_path):
    path = tmp_path / "inline.yaml"
    path.write_text(yaml.safe_dump({"config": shared_config, "runs": {"rloo": {"preset": "rloo"}}}))
    (run,) = plan(path, output=tmp_path / "o").runs
    assert run.cfg.algo.advantage.estimator == "rloo" and run.cfg.train.num_steps == 2


def test_unknown_preset_lists_the_available_names(write_experiment, tmp_path):
    with pytest.raises(ConfigError) as info:
        plan(write_experiment(runs={"X": {"preset": "grpoo"}}), output=tmp_path / "o")
    message = str(info.value)
    assert "preset 'grpoo'" in message and "run 'X'" in message
    assert all(name in message for name in preset_names())
    assert len(preset_names()) == 8


def test_shared_config_may_not_set_a_field_the_preset_defines(write_experiment, shared_config, tmp_path):
    shared_config["algo"] = {"advantage": {"estimator": "rloo"}}
    with pytest.raises(ConfigError, match="config: sets algo.advantage.estimator, which preset 'grpo' defines; "
                                          "set it in the run's overrides instead"):
        plan(write_experiment(), output=tmp_path / "o")


def test_eval_every_is_required(write_experiment, shared_config, tmp_path):
    shared_config["train"]["eval_every"] = 0
    with pytest.raises(ConfigError, match="train.eval_every: compare needs held-out curves"):
        plan(write_experiment(), output=tmp_path / "o")


def test_every_run_is_checked_and_all_problems_are_reported_together(write_experiment, tmp_path):
    path = write_experiment(runs={"A": {"preset": "grpo", "overrides": ["algo.kl.coeff=1"]},
                                  "B": {"preset": "nope"}})
    with pytest.raises(ConfigError) as info:
        plan(path, output=tmp_path / "o")
    assert info.value.problems[0] == "run 'A': algo.kl.coeff: unknown key (did you mean 'coef'?)"
    assert info.value.problems[1].startswith("run 'B': preset 'nope'")


def test_seed_and_output_dir_overrides_are_refused(write_experiment, tmp_path):
    with pytest.raises(ConfigError, match="compare sets seed per run"):
        plan(write_experiment(), output=tmp_path / "o", overrides=["seed=3"])


@pytest.mark.parametrize("fields, expected", [
    ({"runs": {"A": {"presett": "grpo"}}}, "runs.A.presett: unknown key"),
    ({"runs": {}}, "runs: Value error, needs at least one run"),
    ({"runs": {"A": {"preset": "grpo"}}, "seeds": [1, 1]}, "seeds: Value error, needs distinct seeds"),
    ({"runs": {"A": {"preset": "grpo"}}, "sedes": [1]}, "sedes: unknown key"),
])
def test_spec_errors_name_the_file_and_the_field(tmp_path, fields, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(fields))
    with pytest.raises(ConfigError) as info:
        load_experiment_spec(path)
    assert all(line.startswith(f"{path}: ") for line in info.value.problems)
    assert any(line.startswith(f"{path}: {expected}") for line in info.value.problems)


def test_labels_must_not_share_a_directory(write_experiment, tmp_path):
    with pytest.raises(ConfigError, match="share the directory name"):
        plan(write_experiment(runs={"a+b": {"preset": "grpo"}, "a_b": {"preset": "rloo"}}), output=tmp_path / "o")


def test_cli_bad_experiment_file_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("runs: {A: {preset: grpo, overrides: 3}}\n")
    assert main(["compare", str(path), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: runs.A.overrides:") and err.count("\n") == 1


def test_cli_bad_override_fails_before_any_run_dir_exists(write_experiment, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", str(write_experiment()), "--output", str(out), "--seeds", "1", "2",
                 "train.num_stepz=3"]) == 2
    err = capsys.readouterr().err
    assert "train.num_stepz: unknown key (did you mean 'num_steps'?)" in err
    assert not out.exists()


def test_cli_quick_form_needs_presets(tmp_path, capsys):
    assert main(["compare", "--output", str(tmp_path / "o")]) == 2
    assert "--presets" in capsys.readouterr().err


def test_quick_form_labels_runs_by_preset(shared_config, tmp_path):
    (tmp_path / "shared.yaml").write_text(yaml.safe_dump(shared_config))
    experiment = plan(config=str(tmp_path / "shared.yaml"), presets=["reinforce_pp", "rloo"], seeds=[5])
    assert list(experiment.labels()) == ["reinforce_pp", "rloo"]
    assert experiment.out_dir == default_output(None, ["reinforce_pp", "rloo"])
    assert str(experiment.out_dir) == "runs/compare/reinforce_pp_vs_rloo"
    with pytest.raises(ConfigError, match="not both"):
        plan(tmp_path / "x.yaml", presets=["grpo"])


# --- the budget in samples or prompts, per-run overrides as a mapping ------------------------------------


def budget_runs(write_experiment, shared_config, tmp_path, budget, runs=None):
    del shared_config["rollout"]["batch_size"], shared_config["train"]["num_steps"]
    return plan(write_experiment(budget=budget, runs=runs), output=tmp_path / "o").runs


def test_a_budget_in_samples_gives_each_preset_the_same_samples_per_step(write_experiment, shared_config, tmp_path):
    runs = {"REINFORCE++": {"preset": "reinforce_pp"},
            "GRPO": {"preset": "grpo", "overrides": {"rollout": {"n_samples_per_prompt": 2}, "algo.kl.coef": 0.5}}}
    rpp, grpo = budget_runs(write_experiment, shared_config, tmp_path, {"samples_per_step": 8, "steps": 3}, runs)
    assert (rpp.cfg.rollout.batch_size, rpp.cfg.rollout.n_samples_per_prompt) == (8, 1)
    assert (grpo.cfg.rollout.batch_size, grpo.cfg.rollout.n_samples_per_prompt) == (4, 2)  # the mapping override
    assert grpo.cfg.algo.kl.coef == 0.5 and rpp.cfg.train.num_steps == grpo.cfg.train.num_steps == 3


def test_a_budget_in_prompts_sets_the_prompts(write_experiment, shared_config, tmp_path):
    rpp, grpo = budget_runs(write_experiment, shared_config, tmp_path, {"prompts_per_step": 4})
    assert rpp.cfg.rollout.batch_size == grpo.cfg.rollout.batch_size == 4


def test_budget_errors_name_the_field(write_experiment, shared_config, tmp_path):
    with pytest.raises(ConfigError, match=r"run 'GRPO': budget.samples_per_step: 6 samples per step are not whole "
                                          r"prompts of rollout.n_samples_per_prompt = 4"):
        budget_runs(write_experiment, shared_config, tmp_path, {"samples_per_step": 6})
    shared_config["rollout"]["batch_size"] = 4  # set in the shared config too
    with pytest.raises(ConfigError, match=r"budget: sets rollout.batch_size, which the shared config or an override"):
        plan(write_experiment(budget={"samples_per_step": 8}), output=tmp_path / "o")  
    with pytest.raises(ConfigError, match="give samples_per_step or prompts_per_step, not both"):
        plan(write_experiment(budget={"samples_per_step": 8, "prompts_per_step": 2}), output=tmp_path / "o")


SEMAPHORE_SCRIPT = """
from reinforcepp.compare.runner import in_subprocess

def work():
    from tqdm import tqdm  # its write lock is a multiprocessing semaphore, registered under spawn
    for _ in tqdm(range(2)):
        pass
    return "done"

def fail():
    work()
    raise ValueError("boom")

if __name__ == "__main__":
    print(in_subprocess(work))
    try:
        in_subprocess(fail)
    except ValueError as exc:
        print("raised", exc)
"""


@pytest.mark.slow  # two spawned processes: about 7 s
def test_no_semaphore_leaks_when_runs_train_in_subprocesses(tmp_path):
    import os
    import subprocess
    import sys

    script = tmp_path / "runs.py"
    script.write_text(SEMAPHORE_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["done", "raised", "boom"]
    assert "leaked semaphore" not in done.stderr
