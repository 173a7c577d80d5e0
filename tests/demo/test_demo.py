"""`reinforcepp demo --model tiny` on a tiny budget: the same pipeline and files as `make demo`, in seconds."""

import json
from pathlib import Path

import pytest

from reinforcepp.cli import main
from reinforcepp.demo.summary import TABLE, before_after_table
from reinforcepp.report.html import fmt, fmt_points

FAST = ["sft.max_steps=3", "train.num_steps=2", "train.eval_every=1", "rollout.batch_size=16",
        "train.batch_size=16", "train.micro_batch_size=16", "eval.samples_per_prompt=2", "eval.ks=[1,2]",
        "log.progress=false", "log.tensorboard=false"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--model", "tiny", "--output", str(out), *FAST]) == 0
    return out


def records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_the_demo_writes_data_models_metrics_and_report(demo_run):
    for path in ("data/train.jsonl", "data/held_out.jsonl", "data/sft.jsonl", "base-model/config.json",
                 "sft/sft_final/model.safetensors", "final/model.safetensors", "config.yaml", "report.html"):
        assert (demo_run / path).is_file(), path
    held_out = {r["prompt"] for r in records(demo_run / "data/held_out.jsonl")}
    trained = {r["prompt"] for r in records(demo_run / "data/sft.jsonl")}
    assert len(held_out) == 256 and not held_out & trained  # neither stage sees a held-out prompt
    steps = [r["step"] for r in records(demo_run / "metrics.jsonl")]
    assert steps == [0, 1, 2]
    pngs = sorted((demo_run / "plots").glob("*.png"))
    assert len(pngs) >= 3 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_before_and_after_are_the_first_and_last_evaluations_the_run_logged(demo_run):
    summary = json.loads((demo_run / "summary.json").read_text())
    rows = records(demo_run / "metrics.jsonl")
    assert summary["before"] == {k: v for k, v in rows[0].items() if k.startswith("eval/")}
    assert summary["after"] == {k: v for k, v in rows[-1].items() if k.startswith("eval/")}
    assert summary["model_dir"] == str(demo_run / "final")

    page = (demo_run / "report.html").read_text()
    for key, _ in TABLE:
        if key in summary["before"]:
            before, after = summary["before"][key], summary["after"][key]
            assert fmt(before) in page and fmt(after) in page, key
            if "pass@" in key:
                assert fmt_points(after - before) in page, key
    assert str(demo_run / "final") in page


def test_the_printed_table_holds_the_change_in_points():
    table = before_after_table({"eval/sampled/pass@1": 0.25, "eval/greedy/pass@1": 0.5},
                               {"eval/sampled/pass@1": 0.5, "eval/greedy/pass@1": 0.625})
    assert "| held-out accuracy, sampled T=1 (pass@1) | 0.250 | 0.500 | +25.0 pts |" in table
    assert "| held-out accuracy, greedy | 0.500 | 0.625 | +12.5 pts |" in table


def test_the_demo_refuses_a_non_empty_output_directory(demo_run, capsys):
    assert main(["demo", "--model", "tiny", "--output", str(demo_run), *FAST]) == 2
    assert "is not empty" in capsys.readouterr().err
