"""Reading a run directory written by the trainer: metrics records, series of one metric over steps, evaluation
steps, evaluation groups, per-prompt reward curves, and before/after evaluations.

Everything here is plain Python (no matplotlib, no numpy) so that the page builders and the tests can share it
and so that reading stays cheap.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

EVAL_PREFIXES = ("eval/", "eval_train/")
# eval/<mode>/by_<key>/<value>/pass@1, e.g. eval/greedy/by_people/3/pass@1
GROUP_PATTERN = re.compile(r"^eval/(?P<mode>[^/]+)/by_(?P<key>[^/]+)/(?P<value>[^/]+)/pass@1$")
TIMING_PHASES = ("timing/rollout", "timing/experience", "timing/update")
MEMORY_METRICS = ("perf/peak_rss_mb", "memory/peak_mb")


@dataclass
class Run:
    """Everything a page needs from one run directory."""

    path: Path
    records: list[dict[str, float]]
    config_text: str = ""
    summary: dict | None = None
    prompt_rows: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)  # samples.jsonl: one completion per row

    @property
    def name(self) -> str:
        return self.path.name


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSONL file, skipping blank lines and a torn last line (a run still writing)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Metrics records sorted by step, one per step: lines of the same step are merged (later values win), since
    training and evaluation metrics of one step may be logged separately."""
    by_step: dict[int, dict[str, float]] = {}
    for row in read_jsonl(path):
        if "step" not in row:
            continue
        step = int(row["step"])
        merged = by_step.setdefault(step, {"step": step})
        merged.update({k: v for k, v in row.items() if k != "step" and _is_number(v)})
    return [by_step[s] for s in sorted(by_step)]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_run(run_dir: str | Path) -> Run:
    """Read the files of one run directory; missing optional files give empty defaults."""
    path = Path(run_dir)
    config_path = path / "config.yaml"
    summary_path = path / "summary.json"
    return Run(
        path=path,
        records=read_metrics(path / "metrics.jsonl"),
        config_text=config_path.read_text(encoding="utf-8") if config_path.exists() else "",
        summary=json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.exists() else None,
        prompt_rows=read_jsonl(path / "prompt_rewards.jsonl"),
        samples=read_jsonl(path / "samples.jsonl"),
    )


def series(records: list[dict[str, float]], key: str) -> tuple[list[int], list[float]]:
    """Steps and values of one metric, only at the steps that logged it."""
    steps, values = [], []
    for record in records:
        if key in record:
            steps.append(int(record["step"]))
            values.append(float(record[key]))
    return steps, values


def has_metric(records: list[dict[str, float]], key: str) -> bool:
    return any(key in record for record in records)


def is_eval_key(key: str) -> bool:
    return key.startswith(EVAL_PREFIXES)


def last_training_record(records: list[dict[str, float]]) -> dict[str, float]:
    """The training metrics (no evaluation keys) of the last step that has any; empty when none."""
    for record in reversed(records):
        training = {k: v for k, v in record.items() if k != "step" and not is_eval_key(k)}
        if training:
            return {"step": record["step"], **training}
    return {}


def eval_records(records: list[dict[str, float]], prefix: str = "eval/") -> list[dict[str, float]]:
    """Records of the steps that ran an evaluation with this prefix, holding only those evaluation metrics."""
    out = []
    for record in records:
        evals = {k: v for k, v in record.items() if k.startswith(prefix)}
        if evals:
            out.append({"step": record["step"], **evals})
    return out


def eval_steps(records: list[dict[str, float]], prefix: str = "eval/") -> list[int]:
    return [int(r["step"]) for r in eval_records(records, prefix)]


def last_eval(records: list[dict[str, float]], prefix: str = "eval/") -> dict[str, float]:
    found = eval_records(records, prefix)
    return found[-1] if found else {}


def last_value(records: list[dict[str, float]], key: str) -> float | None:
    _, values = series(records, key)
    return values[-1] if values else None


def preferred_mode(records: list[dict[str, float]], prefix: str = "eval/") -> str | None:
    """The evaluation mode to show when only one fits: sampled (closer to what training sees), else greedy."""
    for mode in ("sampled", "greedy"):
        if has_metric(records, f"{prefix}{mode}/pass@1"):
            return mode
    return None


def before_after(run: Run) -> tuple[dict[str, float], dict[str, float]]:
    """Held-out evaluation of the starting and the final policy: from summary.json, else the first and the last
    evaluation in metrics.jsonl (without the group breakdown, which has its own chart)."""
    if run.summary and (run.summary.get("before") or run.summary.get("after")):
        return dict(run.summary.get("before") or {}), dict(run.summary.get("after") or {})
    found = eval_records(run.records, "eval/")
    if len(found) < 1:
        return {}, {}

    def plain(record: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in record.items() if k != "step" and not GROUP_PATTERN.match(k)}

    return plain(found[0]), plain(found[-1])


def group_accuracy(record: dict[str, float], mode: str) -> dict[str, dict[str, float]]:
    """``{group key: {group value: pass@1}}`` of one evaluation record, values in display order."""
    groups: dict[str, dict[str, float]] = {}
    for key, value in record.items():
        match = GROUP_PATTERN.match(str(key))
        if match and match["mode"] == mode:
            groups.setdefault(match["key"], {})[match["value"]] = float(value)
    return {key: {v: values[v] for v in sort_group_values(values)} for key, values in sorted(groups.items())}


def group_modes(records: list[dict[str, float]]) -> list[str]:
    """Evaluation modes that have a group breakdown anywhere, sampled first."""
    modes = {m["mode"] for r in records for k in r if (m := GROUP_PATTERN.match(str(k)))}
    return sorted(modes, key=lambda m: (m != "sampled", m != "greedy", m))


def sort_group_values(values) -> list[str]:
    """Group values in numeric order when they are all integers (3 < 10), else in text order."""
    values = list(values)
    if all(re.fullmatch(r"-?\d+", v) for v in values):
        return sorted(values, key=int)
    return sorted(values)


def prompt_curves(
    prompt_rows: list[dict], max_prompts: int = 30, *, prompts: list[int] | None = None
) -> tuple[list[int], list[int], list[list[float]]]:
    """Per-prompt training curves: (steps, prompt indices, matrix[prompt][step] of mean reward).

    A prompt not sampled at a step carries its last value forward (NaN before its first sample), so that the
    heatmap shows what the policy last scored on it. Rows of the same (step, prompt), e.g. from several seeds, pool
    their samples. Without ``prompts``, at most ``max_prompts`` prompts are kept: the most often sampled ones (ties
    by index), so that the chart stays readable; pass ``prompts`` to show the same prompts for several runs.
    """
    sums: dict[int, dict[int, list[float]]] = {}
    for row in prompt_rows:
        rewards = [float(r) for r in row.get("rewards") or []]
        if rewards:
            total = sums.setdefault(int(row["prompt"]), {}).setdefault(int(row["step"]), [0.0, 0])
            total[0] += sum(rewards)
            total[1] += len(rewards)
    means = {p: {s: t[0] / t[1] for s, t in per_step.items()} for p, per_step in sums.items()}
    steps = sorted({step for per_step in means.values() for step in per_step})
    chosen = prompts if prompts is not None else _pick_prompts(means, max_prompts)
    if not steps or not chosen:
        return [], [], []
    matrix = [_carry_forward(means.get(p, {}), steps) for p in chosen]
    return steps, list(chosen), matrix


def _pick_prompts(means: dict[int, dict[int, float]], max_prompts: int) -> list[int]:
    by_coverage = sorted(means, key=lambda p: (-len(means[p]), p))
    return sorted(by_coverage[:max_prompts])


def _carry_forward(values: dict[int, float], steps: list[int]) -> list[float]:
    row, last = [], math.nan
    for step in steps:
        last = values.get(step, last)
        row.append(last)
    return row


@dataclass
class Band:
    """A seed-averaged curve: mean over the seeds that logged each step, and the min-max band across seeds."""

    steps: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    seeds: int


def average_seeds(curves: list[tuple[list[int], list[float]]]) -> Band:
    """Average several seeds' (steps, values) step by step, on the union of their steps."""
    by_step: dict[int, list[float]] = {}
    for steps, values in curves:
        for step, value in zip(steps, values):
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return Band(
        steps=steps,
        mean=[statistics.fmean(by_step[s]) for s in steps],
        low=[min(by_step[s]) for s in steps],
        high=[max(by_step[s]) for s in steps],
        seeds=sum(1 for steps_, _ in curves if steps_),
    )


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def pooled_median(runs: list[Run], key: str) -> float | None:
    """Median of a metric over all steps of all runs (seeds pooled), None when no run logged it."""
    values = [v for run in runs for v in series(run.records, key)[1]]
    return statistics.median(values) if values else None


def peak_memory(runs: list[Run]) -> tuple[str, float] | None:
    """(metric, largest value over all steps and seeds) of the first memory metric logged, None when absent."""
    for key in MEMORY_METRICS:
        values = [v for run in runs for v in series(run.records, key)[1]]
        if values:
            return key, max(values)
    return None
