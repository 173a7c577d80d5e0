"""Where metrics go: a JSONL file and TensorBoard in the run directory, a progress bar with ETA, and a
one-line summary per step."""

from __future__ import annotations

import json
import math
from pathlib import Path

# (metric, label, format) of the one-line summary
SUMMARY = (
    ("reward/mean", "reward", "{:.3f}"),
    ("kl", "kl", "{:.2e}"),
    ("response_length/mean", "len", "{:.1f}"),
    ("actor/pg_loss", "loss", "{:+.2e}"),
    ("actor/clip_frac", "clip", "{:.3f}"),
    ("actor/entropy", "ent", "{:.2f}"),
    ("eval/greedy/reward_mean", "eval", "{:.3f}"),
    ("timing/step", "s/step", "{:.2f}"),
)


def summary_line(step: int, total: int, metrics: dict[str, float]) -> str:
    parts = [f"step {step}/{total}"]
    for key, label, fmt in SUMMARY:
        if key in metrics:
            parts.append(f"{label} {fmt.format(metrics[key])}")
    return " | ".join(parts)


class MetricsLog:
    """Appends one JSON object per step to ``metrics.jsonl``; mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, *, tensorboard: bool, progress: bool, total_steps: int, start_step: int):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.jsonl"
        self._drop_steps_after(start_step)
        self.total = total_steps
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported at the edge: it is slow

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="RL steps", unit="step", dynamic_ncols=True)

    def _drop_steps_after(self, step: int) -> None:
        """A resumed run redoes the steps after its checkpoint: forget what the interrupted run logged."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")
        if self.writer is not None:
            for key, value in clean.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()
        if self.bar is not None:
            self.bar.update(1)
            self.bar.write(summary_line(step, self.total, metrics))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.bar is not None:
            self.bar.close()
