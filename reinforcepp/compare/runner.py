"""Run a resolved comparison: print the plan, train each run in turn (skipping finished ones, so an interrupted
comparison resumes), then write and print the comparison report.

Runs are sequential on purpose: they share one machine, and parallel runs would distort the wall-time table.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reinforcepp.compare.experiment import RUNNER_FIELDS, Experiment, ResolvedRun, experiment_yaml, flatten
from reinforcepp.config import Config
from reinforcepp.config.budget import HEADERS as BUDGET_HEADERS
from reinforcepp.config.budget import Budget
from reinforcepp.report.html import markdown_table

Echo = Callable[[str], None]
TrainFn = Callable[[Config], Path]
# Files a run appends to: a run restarted from scratch must not mix its steps with the interrupted one's.
APPENDED_FILES = ("metrics.jsonl", "prompt_rewards.jsonl", "samples.jsonl")


def run_experiment(experiment: Experiment, *, train_fn: TrainFn | None = None, echo: Echo = print) -> Path:
    """Train every run not finished yet (each in its own process unless ``train_fn`` is given), then write
    the report; returns the path of report.html."""
    train_fn = train_fn or train_in_subprocess
    from reinforcepp.report import write_compare_report

    out = experiment.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.yaml").write_text(experiment_yaml(experiment), encoding="utf-8")
    echo(plan_text(experiment))
    outcomes = [_run_one(run, i, len(experiment.runs), train_fn, echo) for i, run in enumerate(experiment.runs, 1)]
    echo("\n" + markdown_table(["label", "seed", "status", "seconds"], outcomes))
    report = write_compare_report(out, experiment.labels(), title=experiment.title)
    echo(f"\nreport: {report}\nexperiment: {out / 'experiment.yaml'}\n")
    echo((out / "summary.md").read_text(encoding="utf-8"))
    return report


def train_in_subprocess(cfg: Config) -> Path:
    """``train(cfg)`` in a fresh process: each run's peak memory (perf/peak_rss_mb) is its own, not the
    high-water mark of the runs before it in this process, and no state leaks from one run to the next."""
    return Path(in_subprocess(_train_from_dict, cfg.model_dump(mode="json")))


def in_subprocess(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a fresh spawned process. The worker is let exit on its own once the call is done:
    terminating it (what leaving a Pool's ``with`` block does) skips its finalizers, so the semaphores it made
    (tqdm's lock under spawn) stay registered and the resource tracker warns of leaked semaphores at exit."""
    context = multiprocessing.get_context("spawn")  # fork would inherit this process's memory and threads
    with context.Pool(1) as pool:
        outcome = pool.apply_async(fn, args)
        outcome.wait()  # an interrupt (Ctrl-C) here leaves the block, which terminates the worker
        pool.close()
        pool.join()
        return outcome.get()  # the result, or the call's exception raised here


def _train_from_dict(data: dict[str, Any]) -> str:
    from reinforcepp.config.schema import validate_config
    from reinforcepp.train import train

    return str(train(validate_config(data)))


def plan_text(experiment: Experiment) -> str:
    """What is about to run, and how the runs differ (the fields that differ between the labels' configs)."""
    rows = [[r.label, str(r.seed), str(r.run_dir), "done, skipped" if is_finished(r) else "to run"]
            for r in experiment.runs]
    lines = [f"comparison: {len(experiment.runs)} runs into {experiment.out_dir}",
             markdown_table(["label", "seed", "output dir", "status"], rows),
             "", "budget of each run, in prompts and in samples:", budget_table(experiment)]
    differences = differing_fields(experiment)
    if differences:
        labels = list(experiment.labels())
        lines += ["", "fields that differ between runs:",
                  markdown_table(["field", *labels], [[key, *(_cell(by_label.get(label)) for label in labels)]
                                                      for key, by_label in differences.items()])]
    lines += [f"warning: {message}" for message in experiment.warnings]
    return "\n".join(lines)


def budget_table(experiment: Experiment) -> str:
    """One row per label: prompts and samples per step and in all (the seeds of a label share them)."""
    budgets = {run.label: Budget.of(run.cfg.model_dump()) for run in experiment.runs}
    return markdown_table(["label", *BUDGET_HEADERS], [[label, *budget.cells()] for label, budget in budgets.items()])


def _cell(value: Any) -> str:
    return "–" if value is None else str(value)


def differing_fields(experiment: Experiment) -> dict[str, dict[str, Any]]:
    """dotted field -> {label: value} for every field whose value is not the same in all labels (seed and
    output_dir aside: the runner sets those)."""
    per_label: dict[str, dict[str, Any]] = {}
    for run in experiment.runs:
        per_label.setdefault(run.label, dict(flatten(run.cfg.model_dump(mode="json"))))
    keys = {key for fields in per_label.values() for key in fields} - set(RUNNER_FIELDS)
    differing = {}
    for key in sorted(keys):
        values = {label: fields.get(key) for label, fields in per_label.items()}
        if len({repr(v) for v in values.values()}) > 1:
            differing[key] = values
    return differing


def is_finished(run: ResolvedRun) -> bool:
    """A run whose final model was saved is complete; the trainer writes final/ last."""
    return (run.run_dir / "final").is_dir()


def _run_one(run: ResolvedRun, index: int, total: int, train_fn: TrainFn, echo: Echo) -> list[str]:
    """Train one run (or skip it when finished); returns its row of the timing table."""
    name = f"[{index}/{total}] {run.label}, seed {run.seed}"
    if is_finished(run):
        echo(f"{name}: skipped, {run.run_dir / 'final'} already exists")
        return [run.label, str(run.seed), "skipped (finished earlier)", "–"]
    cfg = _prepare_restart(run, echo, name)
    echo(f"{name}: training into {run.run_dir}")
    start = time.perf_counter()
    train_fn(cfg)
    seconds = time.perf_counter() - start
    echo(f"{name}: done in {seconds:.1f} s")
    return [run.label, str(run.seed), "trained", f"{seconds:.1f}"]


def _prepare_restart(run: ResolvedRun, echo: Echo, name: str) -> Config:
    """An interrupted run continues from its newest checkpoint; without one it restarts, and the files it had
    appended to are cleared so that the report does not mix the two attempts."""
    from reinforcepp.train.checkpoint import complete_checkpoints
    from reinforcepp.train.state import CHECKPOINTS

    if complete_checkpoints(run.run_dir / CHECKPOINTS):
        echo(f"{name}: resuming from the checkpoints in {run.run_dir / CHECKPOINTS}")
        return run.cfg.model_copy(update={"ckpt": run.cfg.ckpt.model_copy(update={"resume": True})})
    stale = [run.run_dir / f for f in APPENDED_FILES if (run.run_dir / f).exists()]
    if stale:
        echo(f"{name}: restarting an unfinished run; clearing {', '.join(p.name for p in stale)}")
        for path in stale:
            path.unlink()
    return run.cfg
