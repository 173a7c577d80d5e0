"""The end of every demo job: before/after from the run's evaluations, summary.json, the report, the table."""

from __future__ import annotations

import json
import time
from pathlib import Path

from reinforcepp.config import Config

# (metric, label) rows of the before/after table; accuracies are pass@k over the held-out prompts
TABLE = (
    ("eval/sampled/pass@1", "held-out accuracy, sampled T=1 (pass@1)"),
    ("eval/greedy/pass@1", "held-out accuracy, greedy"),
    ("eval/sampled/pass@4", "held-out pass@4, sampled"),
    ("eval/sampled/response_length", "response length (tokens)"),
)


def refuse_non_empty(out: Path) -> None:
    """A demo writes into a fresh directory: never over an earlier run's files."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; remove it or pass another --output")


def finish_demo(cfg: Config, final: Path, started: float, title: str, held_out: str, start_label: str,
                **extra: float) -> dict:
    """Write ``summary.json`` and ``report.html`` of the run in ``cfg.output_dir``, print the table; returns the
    summary. Before = the run's first evaluation (step 0), after = its last; ``held_out`` says what the held-out
    prompts are; ``extra`` goes into the summary as is."""
    from reinforcepp.report import write_run_report
    from reinforcepp.report.read import eval_records, read_metrics

    out = Path(cfg.output_dir)
    evals = eval_records(read_metrics(out / "metrics.jsonl"))
    before, after = ({k: v for k, v in r.items() if k != "step"} for r in (evals[0], evals[-1]))
    summary = {
        "title": title,
        "before": before,
        "after": after,
        "before_step": evals[0]["step"],
        "after_step": evals[-1]["step"],
        "model_dir": str(final),
        "wall_time_s": time.perf_counter() - started,
        **extra,
        "notes": [f"Held-out: {held_out}; the same sampling settings (T={cfg.eval.temperature}, "
                  f"{cfg.eval.samples_per_prompt} samples per prompt, same seed) and grading before and after.",
                  f"Before = the {start_label} model (step {evals[0]['step']}), after = the final policy "
                          f"(step {evals[-1]['step']})."],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report = write_run_report(out, title=title)
    print(before_after_table(before, after, start_label))
    print(f"model: {final}\nreport: {report}\nwall time: {summary['wall_time_s'] / 60:.1f} min")
    return summary


def before_after_table(before: dict[str, float], after: dict[str, float], start_label: str = "SFT") -> str:
    """The Markdown before/after table printed at the end of the run."""
    lines = [f"| metric | before ({start_label}) | after (REINFORCE++) | change |", "|---|---|---|---|"]
    for key, label in TABLE:
        if key in before and key in after:
            b, a = before[key], after[key]
            change = f"{(a - b) * 100:+.1f} pts" if "pass@" in key else f"{a - b:+.2f}"
            lines.append(f"| {label} | {b:.3f} | {a:.3f} | {change} |")
    return "\n".join(lines)
