"""The `reinforcepp config` subcommand, in-process and as `python -m reinforcepp`."""

import subprocess
import sys
from pathlib import Path

import yaml

from reinforcepp.cli import main

ROOT = Path(__file__).resolve().parents[2]
GRPO = "grpo"  # a preset by name


def test_config_prints_the_resolved_yaml(capsys):
    assert main(["config", "--config", GRPO, "algo.kl.coef=0.001"]) == 0
    out, err = capsys.readouterr()
    printed = yaml.safe_load(out)
    assert printed["algo"]["kl"]["coef"] == 0.001
    assert printed["algo"]["advantage"]["estimator"] == "grpo"
    assert printed["actor"]["optim"]["lr"] == 5e-7  # defaults are filled in
    assert err == ""


def test_bad_override_exits_2_naming_the_field(capsys):
    assert main(["config", "--config", GRPO, "algo.loss.clip_low=0"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: algo.loss.clip_low: ")


def test_missing_file_exits_2(capsys, tmp_path):
    assert main(["config", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_config_warnings_are_one_plain_line(capsys):
    assert main(["config", "algo.kl.estimator=k2"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: algo.kl.estimator: ") and err.count("\n") == 1


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "reinforcepp", "config", "--config", GRPO, "rollout.n_samples_per_prompt=8"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["rollout"]["n_samples_per_prompt"] == 8
