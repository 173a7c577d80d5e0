"""Where metrics go: a JSONL file in the run directory and the trackers (TensorBoard, wandb, trackio), a
progress bar with ETA, a one-line summary per step, sample completions, and report.html after each evaluation."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from reinforcepp.report.read import is_eval_key

log = logging.getLogger(__name__)

PROMPT_REWARDS = "prompt_rewards.jsonl"
SAMPLES = "samples.jsonl"

# (metric, label, format) of the one-line summary
SUMMARY = (
    ("reward/mean", "reward", "{:.3f}"),
    ("kl", "kl", "{:.2e}"),
    ("response_length/mean", "len", "{:.1f}"),
    ("actor/pg_loss", "loss", "{:+.2e}"),
    ("actor/clip_frac", "clip", "{:.3f}"),
    ("actor/entropy", "ent", "{:.2f}"),
    ("eval/greedy/pass@1", "eval greedy", "{:.3f}"),
    ("eval/sampled/pass@1", "eval sampled", "{:.3f}"),
    ("timing/step", "s/step", "{:.2f}"),
)


def summary_line(step: int, total: int, metrics: dict[str, float]) -> str:
    parts = [f"step {step}/{total}"]
    for key, label, fmt in SUMMARY:
        if key in metrics:
            parts.append(f"{label} {fmt.format(metrics[key])}")
    return " | ".join(parts)


class MetricsFileError(ValueError):
    """A metrics file damaged other than by a crash (which can only tear its last line); names file:line."""


def read_records(path: Path) -> list[tuple[str, dict]]:
    """(line, record) of each line of a JSONL log. A torn last line (a crash mid-write leaves exactly that)
    is dropped with a warning; a bad line elsewhere is a MetricsFileError."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("no integer 'step'")
        except ValueError as exc:
            if number < len(lines):
                raise MetricsFileError(f"{path}:{number}: not a metrics record ({exc}); the file was damaged or "
                                       "edited: fix or remove that line") from None
            log.warning("%s:%d: dropped a partial last line (the run was interrupted while writing it)",
                        path, number)
            continue
        records.append((line, record))
    return records


def open_metrics_log(cfg, start_step: int) -> MetricsLog | QuietLog:
    """The run's metrics log: rank 0 writes (files, trackers, report), the other ranks under torchrun are quiet."""
    from . import dist
    from .trackers import build_trackers

    if not dist.is_main():
        return QuietLog()
    run_dir = Path(cfg.output_dir)
    return MetricsLog(run_dir, tensorboard=cfg.log.tensorboard, progress=cfg.log.progress,
                      total_steps=cfg.train.num_steps, start_step=start_step,
                      trackers=build_trackers(cfg, run_dir), report=cfg.log.report)


class MetricsLog:
    """Appends one JSON object per step to ``metrics.jsonl``; mirrors scalars and sample tables to the trackers
    (TensorBoard when ``tensorboard``); with ``report``, rewrites report.html after each evaluation."""

    def __init__(self, run_dir: Path, *, tensorboard: bool, progress: bool, total_steps: int, start_step: int,
                 trackers=(), report: bool = False):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.jsonl"
        self._drop_steps_after(start_step)
        self.total, self.report = total_steps, report
        self.trackers = list(trackers)
        if tensorboard:
            from .trackers import TensorBoardTracker

            self.trackers.insert(0, TensorBoardTracker(run_dir))
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="RL steps", unit="step", dynamic_ncols=True)

    def _drop_steps_after(self, step: int) -> None:
        """A resumed run redoes the steps after its checkpoint: forget what the interrupted run logged."""
        for path in (self.path, self.path.parent / PROMPT_REWARDS, self.path.parent / SAMPLES):
            if path.exists():
                kept = [line for line, record in read_records(path) if record["step"] <= step]
                path.write_text("".join(line + "\n" for line in kept))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """One RL step's metrics: file, TensorBoard, the bar and its summary line."""
        self._write(step, metrics)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.write(summary_line(step, self.total, metrics))

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        """Evaluation outside an RL step (the starting policy, step 0): the bar does not move."""
        self._write(step, metrics)
        if self.bar is not None:
            self.bar.write(summary_line(step, self.total, metrics))

    def log_samples(self, step: int, rows: list[dict]) -> None:
        """Sample completions of a step (:mod:`.samples`): samples.jsonl and every tracker."""
        with (self.path.parent / SAMPLES).open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, allow_nan=True) + "\n")
        for tracker in self.trackers:
            tracker.log_samples(step, rows)

    def write_report(self) -> None:
        """report.html of the run so far (log.report): after each evaluation, and at the end of training."""
        if self.report:
            from reinforcepp.report import write_run_report

            write_run_report(self.path.parent)

    def log_prompt_rewards(self, step: int, prompt_indices: list[int], rewards) -> None:
        """Each sampled training prompt's rewards at this step (per-prompt training curves)."""
        per_prompt = rewards.view(len(prompt_indices), -1).tolist()
        with (self.path.parent / PROMPT_REWARDS).open("a", encoding="utf-8") as f:
            for index, values in zip(prompt_indices, per_prompt):
                values = [v if math.isfinite(v) else None for v in values]  # None: the reward skipped it
                f.write(json.dumps({"step": step, "prompt": index, "rewards": values}) + "\n")

    def _write(self, step: int, metrics: dict[str, float]) -> None:
        # NaN and +-inf are kept: a diverging run must show it. JSON has no such numbers, so they are written as
        # Python's json writes them (NaN, Infinity, -Infinity), which json.loads (and the report reader) reads.
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **scalars}, allow_nan=True) + "\n")
        for tracker in self.trackers:
            tracker.log_scalars(step, scalars)
        if any(map(is_eval_key, scalars)):
            self.write_report()

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        if self.bar is not None:
            self.bar.close()


class StepProgress:
    """A bar with ETA and a status line every ``total // lines`` steps (and at the last); plain lines when
    the bar is off. For the stages with many short steps (SFT, RM), where a line per step floods the log."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True, lines: int = 20):
        self.total, self.every, self.done = total, max(1, total // lines), 0
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)

    def step(self, line: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.done % self.every == 0 or self.done == self.total:
            (self.bar.write if self.bar is not None else print)(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class QuietLog:
    """The metrics log of a rank other than 0 under torchrun: rank 0 alone writes and prints."""

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def log_prompt_rewards(self, step: int, prompt_indices: list[int], rewards) -> None:
        pass

    def log_samples(self, step: int, rows: list[dict]) -> None:
        pass

    def write_report(self) -> None:
        pass

    def close(self) -> None:
        pass
