"""`reinforcepp compare` end to end on a tiny model: two presets x two seeds, two RL steps each; the report's
numbers must be those of the runs' metrics; a rerun skips finished runs; `reinforcepp report` re-renders a run."""

import contextlib
import io
import json
import statistics

import pytest
import yaml

from reinforcepp.cli import main
from reinforcepp.compare import plan, run_experiment
from reinforcepp.report.html import fmt

LABELS = {"REINFORCE++": "REINFORCE__", "GRPO": "GRPO"}


@pytest.fixture(scope="module")
def compared(tmp_path_factory, make_shared_config):
    """One real comparison, run through the CLI: (output dir, captured stdout)."""
    root = tmp_path_factory.mktemp("compare")
    shared = make_shared_config(batch_size=2, max_new_tokens=3)
    del shared["rollout"]["batch_size"], shared["train"]["num_steps"]  # the budget sets them
    (root / "shared.yaml").write_text(yaml.safe_dump(shared))
    spec = {"title": "tiny", "config": "shared.yaml", "seeds": [1, 2],
            "budget": {"samples_per_step": 4, "steps": 2},  # REINFORCE++: 4 prompts x 1 sample; GRPO: 1 x 4
            "runs": {"REINFORCE++": {"preset": "reinforce_pp"},
                     "GRPO": {"preset": "grpo", "overrides": {"train": {"batch_size": 4, "micro_batch_size": 4}}}}}
    (root / "exp.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    out = root / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["compare", str(root / "exp.yaml"), "--output", str(out)]) == 0
    return out, stdout.getvalue()


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_compare_writes_every_run_and_the_report(compared):
    out, stdout = compared
    for directory in LABELS.values():
        for seed in (1, 2):
            run_dir = out / directory / f"seed{seed}"
            assert (run_dir / "final").is_dir() and (run_dir / "prompt_rewards.jsonl").is_file()
            assert [r["step"] for r in _metrics(run_dir) if "eval/greedy/pass@1" in r] == [0, 2]
    assert (out / "report.html").is_file() and (out / "plots" / "accuracy.png").is_file()
    assert (out / "plots" / "prompts.png").is_file()  # per-prompt curves: log.prompt_rewards was forced on
    resolved = yaml.safe_load((out / "experiment.yaml").read_text())
    assert [(r["label"], r["seed"]) for r in resolved["runs"]] == [("REINFORCE++", 1), ("REINFORCE++", 2),
                                                                   ("GRPO", 1), ("GRPO", 2)]
    assert resolved["runs"][2]["config"]["rollout"]["n_samples_per_prompt"] == 4
    assert "| rollout.n_samples_per_prompt | 1 | 4 |" in stdout  # the plan shows what differs
    assert "| rollout.batch_size | 4 | 1 |" in stdout and "| train.batch_size | 2 | 4 |" in stdout
    budget = ["| REINFORCE++ | 4 | 1 | 4 | 2 | 8 | 8 |", "| GRPO | 1 | 4 | 4 | 2 | 2 | 8 |"]  # the same samples
    summary = (out / "summary.md").read_text()
    assert all(row in stdout and row in summary for row in budget)
    assert f"report: {out / 'report.html'}" in stdout
    assert (out / "summary.md").read_text().strip() in stdout


def test_summary_numbers_are_the_runs_metrics(compared):
    out, _ = compared
    summary = (out / "summary.md").read_text()
    for label, directory in LABELS.items():
        records = [_metrics(out / directory / f"seed{seed}") for seed in (1, 2)]
        median_step = statistics.median(r["timing/step"] for run in records for r in run if "timing/step" in r)
        final_pass = statistics.fmean([r["eval/greedy/pass@1"] for r in run if "eval/greedy/pass@1" in r][-1]
                                      for run in records)
        row = next(line for line in summary.splitlines() if line.startswith(f"| {label} | 2 |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[-1] == fmt(median_step)
        assert cells[2].split(" ± ")[0] == fmt(final_pass)


def test_rerun_skips_finished_runs(compared, tmp_path):
    out, _ = compared
    experiment = plan(out.parent / "exp.yaml", output=out)
    lines: list[str] = []

    def no_training(cfg):
        raise AssertionError(f"{cfg.output_dir} was finished and must not train again")

    report = run_experiment(experiment, train_fn=no_training, echo=lines.append)
    assert report == out / "report.html"
    assert sum("skipped" in line and "already exists" in line for line in lines) == 4


def test_unfinished_run_restarts_with_its_stale_metrics_cleared(compared, tmp_path):
    out, _ = compared
    experiment = plan(out.parent / "exp.yaml", output=tmp_path / "again", seeds=[1])
    for run in experiment.runs:  # copy the finished metrics; the REINFORCE++ run lost its final model
        run.run_dir.mkdir(parents=True)
        source = out / LABELS[run.label] / "seed1"
        (run.run_dir / "metrics.jsonl").write_text((source / "metrics.jsonl").read_text())
        (run.run_dir / "samples.jsonl").write_text('{"step": 1}\n')
        if run.label == "GRPO":
            (run.run_dir / "final").mkdir()
    trained = []

    def fake_train(cfg):
        assert not (tmp_path / "again" / "REINFORCE__" / "seed1" / "metrics.jsonl").exists()
        assert not (tmp_path / "again" / "REINFORCE__" / "seed1" / "samples.jsonl").exists()
        trained.append(cfg.output_dir)
        (tmp_path / "again" / "REINFORCE__" / "seed1" / "metrics.jsonl").write_text(
            (out / "REINFORCE__" / "seed1" / "metrics.jsonl").read_text())

    run_experiment(experiment, train_fn=fake_train, echo=lambda line: None)
    assert trained == [str(tmp_path / "again" / "REINFORCE__" / "seed1")]


def test_report_command_rerenders_a_run(compared, capsys):
    out, _ = compared
    run_dir = out / "GRPO" / "seed1"
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run_dir / 'report.html'}"
    assert (run_dir / "report.html").is_file()
    assert main(["report", str(out / "missing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
