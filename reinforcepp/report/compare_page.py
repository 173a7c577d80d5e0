"""The comparison of several algorithms (labels), each run with one or more seeds: ``out_dir/report.html``, its
PNG plots in ``out_dir/plots``, and ``out_dir/summary.md`` with the same tables in Markdown.

Seeds are averaged step by step (mean line, min-max band); each label keeps one colour across all figures.
Each section is built once as a ``Block`` and rendered to both HTML and Markdown, so the two never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reinforcepp.config.budget import HEADERS as BUDGET_HEADERS
from reinforcepp.config.budget import Budget

from . import html as h
from . import plots
from .read import (
    TIMING_PHASES,
    Band,
    Run,
    average_seeds,
    group_accuracy,
    group_modes,
    has_metric,
    last_eval,
    last_value,
    load_run,
    mean_std,
    peak_memory,
    pooled_median,
    prompt_curves,
    series,
    sort_group_values,
)

MAX_PROMPTS = 30


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Block:
    """One section of the page: notes, figures (HTML snippets) and tables."""

    heading: str
    notes: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


@dataclass
class Study:
    """The runs of every label, their colours, where the page goes, and the evaluation mode shown."""

    runs: dict[str, list[Run]]
    colours: dict[str, str]
    out_dir: Path
    mode: str

    @property
    def plots_dir(self) -> Path:
        return self.out_dir / "plots"

    def all_runs(self) -> list[Run]:
        return [run for runs in self.runs.values() for run in runs]

    def figure(self, png: Path, alt: str, caption: str = "", *, wide: bool = False) -> str:
        return h.figure(png, alt, caption, wide=wide)


def write_compare_report(
    out_dir: str | Path, runs: dict[str, list[str | Path]], *, title: str | None = None
) -> Path:
    """Write ``out_dir/report.html``, ``out_dir/plots/*.png`` and ``out_dir/summary.md``; return the HTML path.

    ``runs`` maps a label (an algorithm name such as "REINFORCE++") to its run directories, one per seed; the first
    label is the baseline of the wall-time ratios.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = {label: [load_run(d) for d in dirs] for label, dirs in runs.items()}
    study = Study(loaded, plots.colour_map(list(loaded)), out, _common_mode([r for rs in loaded.values() for r in rs]))
    page_title = title or "Comparison: " + " vs ".join(loaded)
    blocks = [
        _final_block(study),
        _budget_block(study),
        _reward_block(study),
        _length_block(study),
        _accuracy_block(study),
        _prompt_block(study),
        _group_block(study),
        _timing_block(study),
    ]
    header = h.meta_line("Runs", "; ".join(f"{label}: {len(rs)} seed(s)" for label, rs in loaded.items()))
    html_path = out / "report.html"
    html_path.write_text(h.page(page_title, header, [_render_html(b) for b in blocks]), encoding="utf-8")
    (out / "summary.md").write_text(_render_markdown(page_title, blocks, loaded), encoding="utf-8")
    return html_path


def _common_mode(runs: list[Run]) -> str:
    """sampled when any run evaluated with sampling (closer to training), else greedy."""
    return "sampled" if any(has_metric(r.records, "eval/sampled/pass@1") for r in runs) else "greedy"


def _render_html(block: Block) -> str:
    parts = [h.note(n) for n in block.notes] + [h.grid(block.figures)]
    for table in block.tables:
        parts += [h.subheading(table.title) if table.title else "", h.table(table.headers, table.rows)]
    return h.section(block.heading, *parts)


def _render_markdown(title: str, blocks: list[Block], runs: dict[str, list[Run]]) -> str:
    lines = [f"# {title}", ""]
    lines += [f"- {label}: " + ", ".join(f"`{r.path}`" for r in rs) for label, rs in runs.items()]
    for block in blocks:
        missing = [f"_{n}_" for n in block.notes if n.endswith(h.NOT_MEASURED)]
        if not block.tables and not missing:
            continue  # figures only: they live in report.html
        lines += ["", f"## {block.heading}", "", *missing]
        for table in block.tables:
            lines += ([f"**{table.title}**", ""] if table.title else []) + [h.markdown_table(table.headers, table.rows), ""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------- shared pieces of the blocks


def _band(runs: list[Run], key: str) -> Band | None:
    """The seed average of one metric, None when no seed logged it."""
    curves = [series(r.records, key) for r in runs]
    return average_seeds(curves) if any(steps for steps, _ in curves) else None


def _band_line(label: str, band: Band, colour: str, *, dashed: bool = False, markers: bool = False) -> plots.Line:
    """A plotted seed average; the min-max band only when there is more than one seed."""
    spread = band.seeds > 1
    return plots.Line(label, band.steps, band.mean, colour, low=band.low if spread else None,
                      high=band.high if spread else None, dashed=dashed, markers=markers)


def _curves_figure(study: Study, key: str, stem: str, title: str, ylabel: str, *, from_zero: bool = False) -> str:
    """One seed-averaged curve per label over steps; empty when no run logged the metric."""
    lines = [_band_line(label, band, study.colours[label])
             for label, runs in study.runs.items() if (band := _band(runs, key))]
    if not lines:
        return ""
    png = plots.line_chart(study.plots_dir / f"{stem}.png", lines, title=title, xlabel="RL step", ylabel=ylabel,
                           from_zero=from_zero)
    return study.figure(png, f"{title} over RL steps, one line per algorithm (mean over seeds, min-max band)")


def _final_values(runs: list[Run], key: str) -> list[float]:
    """The last logged value of a metric in each seed that logged it."""
    return [v for r in runs if (v := last_value(r.records, key)) is not None]


def _mean_cell(values: list[float], *, with_std: bool = False) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    return f"{h.fmt(mean)} ± {h.fmt(std)}" if with_std and len(values) > 1 else h.fmt(mean)


def _missing(block: Block, what: str) -> Block:
    block.notes.append(f"{what}: {h.NOT_MEASURED}")
    return block


# ---------------------------------------------------------------- the blocks


def _final_block(study: Study) -> Block:
    """label, seeds, final held-out and train pass@1, final reward and KL, median seconds per step."""
    mode = study.mode
    headers = ["label", "seeds", f"held-out pass@1 ({mode})", f"train pass@1 ({mode})", "final reward", "final KL",
               "median s/step"]
    rows = []
    for label, runs in study.runs.items():
        rows.append([
            label,
            str(len(runs)),
            _mean_cell(_final_values(runs, f"eval/{mode}/pass@1"), with_std=True),
            _mean_cell(_final_values(runs, f"eval_train/{mode}/pass@1"), with_std=True),
            _mean_cell(_final_values(runs, "reward/mean"), with_std=True),
            _mean_cell(_final_values(runs, "kl")),
            h.fmt(pooled_median(runs, "timing/step")),
        ])
    note = "Last logged value of each seed, mean ± std over seeds; median s/step pools all steps of all seeds."
    return Block("Final results", notes=[note], tables=[Table("", headers, rows)])


def _budget_block(study: Study) -> Block:
    """What each label drew: prompts and samples per step and in all (from its first seed's config.yaml)."""
    block = Block("Budget")
    rows = []
    for label, runs in study.runs.items():
        try:
            cells = Budget.of(yaml.safe_load(runs[0].config_text)).cells()
        except (KeyError, TypeError, ValueError, IndexError, yaml.YAMLError):  # no config.yaml, or not a full one
            cells = ["–"] * len(BUDGET_HEADERS)
        rows.append([label, *cells])
    block.notes.append("rollout.batch_size counts prompts; each draws rollout.n_samples_per_prompt samples.")
    block.tables.append(Table("", ["label", *BUDGET_HEADERS], rows))
    return block


def _reward_block(study: Study) -> Block:
    """Reward against KL (the REINFORCE++ paper's Fig. 2) and reward over steps."""
    block = Block("Reward and KL")
    lines = []
    for label, runs in study.runs.items():
        kl, reward = _band(runs, "kl"), _band(runs, "reward/mean")
        if kl and reward:
            kl_at = dict(zip(kl.steps, kl.mean))
            steps = [s for s in reward.steps if s in kl_at]  # points in step order
            reward_at = dict(zip(reward.steps, reward.mean))
            lines.append(plots.Line(label, [kl_at[s] for s in steps], [reward_at[s] for s in steps],
                                    study.colours[label], markers=True))
    if lines:
        png = plots.line_chart(study.plots_dir / "reward_vs_kl.png", lines, title="Reward against KL",
                               xlabel="KL to the reference per token (nats)", ylabel="mean training reward",
                               integer_x=False)
        block.figures.append(study.figure(png, "Mean training reward against KL, points in step order",
                                          "Each point is one RL step (seed means); reward gained per unit of KL."))
    block.figures.append(_curves_figure(study, "reward/mean", "reward", "Training reward", "mean reward per sample"))
    block.figures = [f for f in block.figures if f]
    return block if block.figures else _missing(block, "training reward")


def _length_block(study: Study) -> Block:
    block = Block("Response length and sequence KL")
    figure = _curves_figure(study, "response_length/mean", "response_length", "Response length",
                            "mean length (tokens)")
    kl_seq = _curves_figure(study, "kl/seq_k1", "kl_seq", "Sequence KL", "KL per sequence (nats)",
                            from_zero=True)
    block.figures = [f for f in (figure, kl_seq) if f]
    return block if block.figures else _missing(block, "response length")


def _accuracy_block(study: Study) -> Block:
    """Held-out (solid) against training-prompt (dashed) pass@1 over steps, and the final gap."""
    mode, block = study.mode, Block("Train against held-out accuracy")
    lines, rows = [], []
    for label, runs in study.runs.items():
        held, train = _band(runs, f"eval/{mode}/pass@1"), _band(runs, f"eval_train/{mode}/pass@1")
        if held:
            lines.append(_band_line(f"{label}, held-out", held, study.colours[label], markers=True))
        if train:
            lines.append(_band_line(f"{label}, train", train, study.colours[label], dashed=True, markers=True))
        held_final = _final_values(runs, f"eval/{mode}/pass@1")
        train_final = _final_values(runs, f"eval_train/{mode}/pass@1")
        gap = h.fmt_points(mean_std(train_final)[0] - mean_std(held_final)[0]) if held_final and train_final else "–"
        rows.append([label, _mean_cell(train_final), _mean_cell(held_final), gap])
    if not lines:
        return _missing(block, "held-out accuracy")
    png = plots.line_chart(study.plots_dir / "accuracy.png", lines, title=f"pass@1 ({mode} decoding)",
                           xlabel="RL step", ylabel="pass@1", percent=True)
    block.figures.append(study.figure(png, "pass@1 over RL steps on held-out and training prompts per algorithm",
                                      "Solid: held-out prompts; dashed: training prompts."))
    block.tables.append(Table(f"Final pass@1 ({mode}), mean over seeds; gap = train - held-out",
                              ["label", "train pass@1", "held-out pass@1", "gap"], rows))
    return block


def _prompt_block(study: Study) -> Block:
    """Per-prompt training curves (the paper's Fig. 3): one heatmap per label on the same prompts."""
    block = Block("Per-prompt training curves")
    rows_by_label = {label: [row for r in runs for row in r.prompt_rows] for label, runs in study.runs.items()}
    _, prompts, _ = prompt_curves([row for rows in rows_by_label.values() for row in rows], MAX_PROMPTS)
    panels = []
    for label, rows in rows_by_label.items():
        steps, chosen, matrix = prompt_curves(rows, prompts=prompts)
        if steps:
            panels.append((label, steps, chosen, matrix))
    if not panels:
        return _missing(block, "per-prompt rewards")
    png = plots.heatmaps(study.plots_dir / "prompts.png", panels, title="Mean reward per training prompt",
                         colour_label="mean reward")
    caption = (f"{len(prompts)} prompts (the most sampled); samples of all seeds pooled; a prompt not sampled at a "
               "step keeps its last value, grey before its first sample.")
    block.figures.append(study.figure(png, "Heatmaps of mean reward per training prompt over RL steps, per algorithm",
                                      caption, wide=True))
    return block


def _group_block(study: Study) -> Block:
    """pass@1 of the last evaluation by group (the paper's Fig. 4, K&K by number of people), bars = labels."""
    block = Block("Accuracy by group")
    modes = group_modes([record for run in study.all_runs() for record in run.records])
    if not modes:
        return _missing(block, "accuracy by group")
    mode = study.mode if study.mode in modes else modes[0]
    per_label = {label: _group_means(runs, mode) for label, runs in study.runs.items()}
    keys = sorted({key for groups in per_label.values() for key in groups})
    for key in keys:
        values = sort_group_values({v for groups in per_label.values() for v in groups.get(key, {})})
        bars = {label: [groups.get(key, {}).get(v, float("nan")) for v in values] for label, groups in per_label.items()}
        png = plots.grouped_bars(study.plots_dir / f"by_{h.slug(key)}.png", values, bars, study.colours,
                                 title=f"Last evaluation pass@1 by {key} ({mode})", xlabel=key, ylabel="pass@1")
        block.figures.append(study.figure(png, f"Grouped bars of pass@1 by {key}, one bar per algorithm"))
        rows = [[label, *(h.fmt(v) if v == v else "–" for v in bar), _average_cell(bar)] for label, bar in bars.items()]
        block.tables.append(Table(f"pass@1 by {key} ({mode}), mean over seeds", ["label", *values, "average"], rows))
    return block


def _group_means(runs: list[Run], mode: str) -> dict[str, dict[str, float]]:
    """``{key: {value: pass@1}}`` of each seed's last evaluation, averaged over the seeds that have the value."""
    collected: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for key, values in group_accuracy(last_eval(run.records), mode).items():
            for value, acc in values.items():
                collected.setdefault(key, {}).setdefault(value, []).append(acc)
    return {key: {v: mean_std(accs)[0] for v, accs in values.items()} for key, values in collected.items()}


def _average_cell(values: list[float]) -> str:
    present = [v for v in values if v == v]  # NaN marks a missing group
    return h.fmt(sum(present) / len(present)) if present else "–"


def _timing_block(study: Study) -> Block:
    """Median seconds per step, ratio to the first label, phase breakdown, and peak memory when logged."""
    block = Block("Wall time per step")
    medians = {label: pooled_median(runs, "timing/step") for label, runs in study.runs.items()}
    phases = [k for k in TIMING_PHASES if any(has_metric(r.records, k) for r in study.all_runs())]
    if all(m is None for m in medians.values()) and not phases:
        return _missing(block, "wall time")
    memory = {label: peak_memory(runs) for label, runs in study.runs.items()}
    show_memory = any(memory.values())
    baseline_label = next(iter(study.runs))
    headers = ["label", "median s/step", "vs first label", *(f"median {k.split('/')[1]} s" for k in phases)]
    headers += ["peak memory (MB)"] if show_memory else []
    rows = []
    for label, runs in study.runs.items():
        row = [label, h.fmt(medians[label]), _ratio_cell(label, medians[label], baseline_label,
                                                        medians[baseline_label])]
        row += [h.fmt(pooled_median(runs, k)) for k in phases]
        row += [h.fmt(memory[label][1]) if memory[label] else "–"] if show_memory else []
        rows.append(row)
    block.notes.append("Medians pool all steps of all seeds of a label.")
    block.tables.append(Table("", headers, rows))
    parts = {k.split("/")[1]: [pooled_median(runs, k) or 0.0 for runs in study.runs.values()] for k in phases}
    if not parts:
        parts = {"step": [m or 0.0 for m in medians.values()]}
    png = plots.stacked_bars(study.plots_dir / "timing.png", list(study.runs), parts,
                             title="Median time per RL step", ylabel="seconds")
    block.figures.append(study.figure(png, "Stacked bars of median seconds per RL step by phase, per algorithm"))
    return block


def _ratio_cell(label: str, median: float | None, baseline_label: str, baseline: float | None) -> str:
    """'1.43x REINFORCE++': how many times slower (or faster, below 1) than the first label."""
    if median is None or not baseline:
        return "–"
    return f"{median / baseline:.2f}x {baseline_label}"
