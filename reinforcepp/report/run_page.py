"""The report of one training run: ``run_dir/report.html``, one self-contained page (its PNG plots, also kept in
``run_dir/plots``, are embedded)."""

from __future__ import annotations

from pathlib import Path

from . import html as h
from . import plots
from .samples_section import samples_section
from .read import (
    TIMING_PHASES,
    Run,
    before_after,
    eval_records,
    group_accuracy,
    group_modes,
    has_metric,
    last_eval,
    last_training_record,
    load_run,
    prompt_curves,
    series,
    sort_group_values,
)

# (file stem, metric, title, y label, y from 0): single-curve training charts, drawn when the metric was logged
TRAINING_CHARTS = (
    ("kl", "kl", "KL to the reference policy", "KL per token (nats)", True),
    ("kl_seq", "kl/seq_k1", "Sequence KL to the reference", "KL per sequence (nats)", True),
    ("response_length", "response_length/mean", "Response length", "mean length (tokens)", False),
    ("entropy", "actor/entropy", "Policy entropy", "entropy per token (nats)", False),
    ("clip_frac", "actor/clip_frac", "Clipped fraction", "fraction of tokens clipped", True),
)
MODE_COLOURS = {"greedy": plots.PALETTE[0], "sampled": plots.PALETTE[1]}


def write_run_report(run_dir: str | Path, *, title: str | None = None) -> Path:
    """Write ``run_dir/report.html`` (plots embedded, and saved in ``run_dir/plots``) and return its path.

    The title is the argument, else summary.json's title, else the directory name.
    """
    run = load_run(run_dir)
    page_title = title or (run.summary or {}).get("title") or run.name
    plots_dir = run.path / "plots"
    sections = [
        _before_after_section(run),
        _training_section(run, plots_dir),
        _evaluation_section(run, plots_dir),
        _prompt_section(run, plots_dir),
        samples_section(run.samples),
        _final_section(run),
        h.section("Config", h.pre(run.config_text) if run.config_text else h.note("no config.yaml in the run")),
    ]
    out = run.path / "report.html"
    out.write_text(h.page(page_title, _header(run), sections), encoding="utf-8")
    return out


def _header(run: Run) -> str:
    """Where the final model is, how long the run took, and the notes of summary.json."""
    summary = run.summary or {}
    model_dir = summary.get("model_dir") or (str(run.path / "final") if (run.path / "final").exists() else None)
    parts = [h.meta_line("Run directory", str(run.path), code=True)]
    parts.append(h.meta_line("Final model", model_dir or "not saved", code=bool(model_dir)))
    if summary.get("wall_time_s") is not None:
        parts.append(h.meta_line("Wall time", h.fmt_seconds(float(summary["wall_time_s"]))))
    elif has_metric(run.records, "timing/step"):
        total = sum(series(run.records, "timing/step")[1])
        parts.append(h.meta_line("Wall time", f"{h.fmt_seconds(total)} (sum of timing/step)"))
    steps = [r["step"] for r in run.records]
    if steps:
        parts.append(h.meta_line("Steps logged", f"{min(steps)} to {max(steps)}"))
    if summary.get("notes"):
        parts.append(h.bullet_list([str(n) for n in summary["notes"]]))
    return "\n".join(parts)


def _before_after_section(run: Run) -> str:
    before, after = before_after(run)
    if not before and not after:
        return h.section("Before and after training", h.note("held-out evaluation " + h.NOT_MEASURED))
    if run.summary and (run.summary.get("before") or run.summary.get("after")):
        source = "Held-out evaluation of the starting and the final policy, same sampling settings (summary.json)."
    else:
        steps = [r["step"] for r in eval_records(run.records)]
        source = f"First (step {steps[0]}) and last (step {steps[-1]}) held-out evaluation in metrics.jsonl."
    rows = h.before_after_rows(before, after)
    return h.section("Before and after training", h.note(source), h.table(["metric", "before", "after", "change"], rows))


def _training_section(run: Run, plots_dir: Path) -> str:
    figures = [_reward_figure(run, plots_dir)]
    for stem, key, title, ylabel, from_zero in TRAINING_CHARTS:
        if has_metric(run.records, key):
            steps, values = series(run.records, key)
            png = plots.line_chart(plots_dir / f"{stem}.png", [plots.Line("", steps, values, plots.PALETTE[0])],
                                   title=title, xlabel="RL step", ylabel=ylabel, from_zero=from_zero)
            figures.append(h.figure(png, alt=f"{title} over RL steps"))
    figures.append(_timing_figure(run, plots_dir))
    figures = [f for f in figures if f]
    return h.section("Training", h.grid(figures) if figures else h.note("training metrics " + h.NOT_MEASURED))


def _reward_figure(run: Run, plots_dir: Path) -> str:
    """Mean training reward with a ±1 std band across the step's samples."""
    if not has_metric(run.records, "reward/mean"):
        return ""
    steps, mean = series(run.records, "reward/mean")
    std_by_step = dict(zip(*series(run.records, "reward/std")))
    line = plots.Line("mean ± std over samples" if std_by_step else "mean", steps, mean, plots.PALETTE[0])
    if std_by_step:
        line.low = [m - std_by_step.get(s, 0.0) for s, m in zip(steps, mean)]
        line.high = [m + std_by_step.get(s, 0.0) for s, m in zip(steps, mean)]
    png = plots.line_chart(plots_dir / "reward.png", [line], title="Training reward", xlabel="RL step",
                           ylabel="reward per sample")
    return h.figure(png, alt="Training reward over RL steps, mean with a band of one standard deviation")


def _timing_figure(run: Run, plots_dir: Path) -> str:
    """Seconds per step, split into phases when they were timed."""
    phases = [k for k in TIMING_PHASES if has_metric(run.records, k)]
    if not phases and not has_metric(run.records, "timing/step"):
        return ""
    timed = [r for r in run.records if any(k in r for k in phases)]
    steps = [r["step"] for r in timed]
    parts = {k.split("/")[1]: [float(r.get(k, 0.0)) for r in timed] for k in phases}
    total = series(run.records, "timing/step") if has_metric(run.records, "timing/step") else None
    png = plots.stacked_area(plots_dir / "timing.png", steps, parts, total=total, title="Time per RL step",
                             ylabel="seconds")
    return h.figure(png, alt="Seconds per RL step, split into rollout, experience and update")


def _evaluation_section(run: Run, plots_dir: Path) -> str:
    figures = [_accuracy_figure(run, plots_dir), _group_figure(run, plots_dir)]
    figures = [f for f in figures if f]
    if not figures:
        return h.section("Held-out evaluation", h.note("held-out evaluation " + h.NOT_MEASURED))
    return h.section("Held-out evaluation", h.grid(figures))


def _accuracy_figure(run: Run, plots_dir: Path) -> str:
    """pass@1 on held-out prompts (solid) and on training prompts (dashed, shows overfitting), greedy and sampled."""
    lines = []
    for prefix, where, dashed in (("eval/", "held-out", False), ("eval_train/", "train prompts", True)):
        for mode, colour in MODE_COLOURS.items():
            steps, values = series(run.records, f"{prefix}{mode}/pass@1")
            if steps:
                lines.append(plots.Line(f"{mode}, {where}", steps, values, colour, dashed=dashed, markers=True))
    if not lines:
        return ""
    png = plots.line_chart(plots_dir / "accuracy.png", lines, title="Accuracy (pass@1)", xlabel="RL step",
                           ylabel="pass@1", percent=True)
    return h.figure(png, alt="pass@1 over RL steps on held-out and training prompts",
                    caption="Solid: held-out prompts; dashed: training prompts.")


def _group_figure(run: Run, plots_dir: Path) -> str:
    """pass@1 of the last evaluation by group (e.g. by number of people), one bar per evaluation mode."""
    modes = group_modes(run.records)
    last = last_eval(run.records)
    groups = {mode: group_accuracy(last, mode) for mode in modes}
    keys = sorted({key for per_mode in groups.values() for key in per_mode})
    if not keys:
        return ""
    key = keys[0]  # one chart; further keys are rare and listed in the final table
    values = sort_group_values({v for per_mode in groups.values() for v in per_mode.get(key, {})})
    bars = {mode: [groups[mode].get(key, {}).get(v, float("nan")) for v in values] for mode in modes}
    colours = {mode: MODE_COLOURS.get(mode, plots.PALETTE[2]) for mode in modes}
    png = plots.grouped_bars(plots_dir / f"by_{h.slug(key)}.png", values, bars, colours,
                             title=f"pass@1 by {key} (step {last['step']})", xlabel=key, ylabel="pass@1")
    return h.figure(png, alt=f"pass@1 of the last held-out evaluation by {key}")


def _prompt_section(run: Run, plots_dir: Path) -> str:
    steps, prompts, matrix = prompt_curves(run.prompt_rows)
    if not prompts:
        return ""
    png = plots.heatmaps(plots_dir / "prompts.png", [("", steps, prompts, matrix)],
                         title="Mean reward per training prompt", colour_label="mean reward of the prompt's samples")
    caption = "Each row is a training prompt; a prompt not sampled at a step keeps its last value (grey: not yet seen)."
    return h.section("Per-prompt training curves",
                     h.grid([h.figure(png, alt="Heatmap of mean reward per prompt over RL steps",
                                      caption=caption, wide=True)]))


def _final_section(run: Run) -> str:
    """Last step's training metrics and the last evaluations, exactly as logged."""
    parts = []
    training = last_training_record(run.records)
    if training:
        parts += [h.subheading(f"Training metrics at step {training['step']}"),
                  h.table(["metric", "value"], h.metric_rows(training))]
    for prefix, name in (("eval/", "held-out"), ("eval_train/", "training-prompt")):
        last = last_eval(run.records, prefix)
        if last:
            parts += [h.subheading(f"Last {name} evaluation (step {last['step']})"),
                      h.table(["metric", "value"], h.metric_rows(last))]
    return h.section("Final metrics", *(parts or [h.note("metrics " + h.NOT_MEASURED)]))
