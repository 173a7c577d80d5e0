"""Plotting helpers on plain lists and dicts: each builds a ``matplotlib.figure.Figure`` (no pyplot, no global
figure state, Agg canvas) and saves one PNG sized for a 1100-px page, two charts per row or one wide chart.

Only this module imports matplotlib, and only the page builders import this module, so that
``import reinforcepp.report`` stays cheap.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib

matplotlib.use("Agg")  # no display: never pick an interactive backend, even if pyplot gets imported elsewhere

from matplotlib import rc_context  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator, PercentFormatter  # noqa: E402

DPI = 110
HALF = (5.6, 3.5)  # inches: ~616 px, shown two per row in the 1100-px page
WIDE = (11.2, 3.9)

# Okabe-Ito, colour-blind safe; yellow left out (unreadable on white)
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999")
PHASE_COLOURS = {"rollout": "#0072B2", "experience": "#E69F00", "update": "#009E73", "reward": "#CC79A7"}

STYLE = {
    "font.size": 10,
    "axes.titlesize": 11.5,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.8,
    "axes.edgecolor": "#888888",
    "axes.axisbelow": True,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "lines.linewidth": 1.9,
}


def colour_map(labels: Sequence[str]) -> dict[str, str]:
    """One colour per label, fixed by the order of the labels, so that a label has the same colour everywhere."""
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}


@dataclass
class Line:
    """One curve: y over x, optionally with a shaded band (low, high), dashed, or with point markers."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    colour: str
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None
    dashed: bool = False
    markers: bool = False


@contextmanager
def _figure(path: Path, size: tuple[float, float] = HALF, ncols: int = 1) -> Iterator[tuple[Figure, list]]:
    """A styled figure with ``ncols`` axes, saved as PNG to ``path`` when the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rc_context(STYLE):
        fig = Figure(figsize=size, dpi=DPI, layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=False)[0].tolist()
        yield fig, axes
        fig.savefig(path, dpi=DPI, format="png")


def _labels(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def _legend_outside(ax) -> None:
    """Legend right of the axes: stacked areas and bars fill the plot, a legend inside would hide them."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _fraction_axis(ax, values: Sequence[float]) -> None:
    """Accuracies in [0, 1] read as percentages on a 0-100 % axis."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if finite and all(0.0 <= v <= 1.0 for v in finite):
        ax.set_ylim(-0.02, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))


def line_chart(
    path: Path,
    lines: Sequence[Line],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    percent: bool = False,
    integer_x: bool = True,
    from_zero: bool = False,
) -> Path:
    """Curves over steps (or any x), with bands where given; ``percent`` shows values in [0, 1] as 0-100 %,
    ``from_zero`` starts the y axis at 0 (non-negative metrics such as KL, where a flat curve must not look noisy)."""
    with _figure(path) as (fig, (ax,)):
        for line in lines:
            style = "--" if line.dashed else "-"
            marker = "o" if line.markers else None
            ax.plot(line.x, line.y, style, color=line.colour, label=line.label, marker=marker, markersize=3.5)
            if line.low is not None and line.high is not None:
                ax.fill_between(line.x, line.low, line.high, color=line.colour, alpha=0.18, linewidth=0)
        if integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if percent:
            _fraction_axis(ax, [v for line in lines for v in line.y])
        if from_zero:
            ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1e-6))
        _labels(ax, title, xlabel, ylabel)
        if len(lines) > 1 or (lines and lines[0].label):
            ax.legend(loc="best")
    return path


def stacked_area(
    path: Path,
    steps: Sequence[int],
    parts: dict[str, Sequence[float]],
    *,
    total: tuple[Sequence[int], Sequence[float]] | None = None,
    title: str,
    ylabel: str,
) -> Path:
    """Phases of a step stacked over steps (e.g. rollout / experience / update seconds), the total as a line."""
    with _figure(path) as (fig, (ax,)):
        names = list(parts)
        colours = [PHASE_COLOURS.get(n, PALETTE[i % len(PALETTE)]) for i, n in enumerate(names)]
        if names:
            ax.stackplot(steps, *[parts[n] for n in names], labels=names, colors=colours, alpha=0.85, linewidth=0)
        if total is not None:
            ax.plot(total[0], total[1], color="#333333", linewidth=1.4, label="total step")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _labels(ax, title, "RL step", ylabel)
        _legend_outside(ax)
    return path


def stacked_bars(
    path: Path, categories: Sequence[str], parts: dict[str, Sequence[float]], *, title: str, ylabel: str
) -> Path:
    """One bar per category (e.g. algorithm), split into stacked parts (e.g. phases of a step)."""
    with _figure(path) as (fig, (ax,)):
        bottoms = [0.0] * len(categories)
        for i, (name, values) in enumerate(parts.items()):
            colour = PHASE_COLOURS.get(name, PALETTE[i % len(PALETTE)])
            ax.bar(categories, values, bottom=bottoms, color=colour, label=name, width=0.55)
            bottoms = [b + v for b, v in zip(bottoms, values)]
        ax.grid(axis="x", visible=False)
        _labels(ax, title, "", ylabel)
        _legend_outside(ax)
    return path


def grouped_bars(
    path: Path,
    groups: Sequence[str],
    bars: dict[str, Sequence[float]],
    colours: dict[str, str],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    errors: dict[str, Sequence[float]] | None = None,
    percent: bool = True,
    wide: bool = False,
) -> Path:
    """Bars of each label side by side within each group (e.g. accuracy by number of people, one bar per algorithm);
    NaN values (a label without that group) leave a gap."""
    with _figure(path, WIDE if wide else HALF) as (fig, (ax,)):
        count = max(len(bars), 1)
        width = 0.8 / count
        for i, (label, values) in enumerate(bars.items()):
            xs = [g + (i - (count - 1) / 2) * width for g in range(len(groups))]
            err = errors.get(label) if errors else None
            ax.bar(xs, values, width=width * 0.92, color=colours[label], label=label, yerr=err, capsize=2.5,
                   error_kw={"elinewidth": 0.9, "ecolor": "#444444"})
        ax.set_xticks(range(len(groups)), [str(g) for g in groups])
        ax.grid(axis="x", visible=False)
        if percent:
            _fraction_axis(ax, [v for values in bars.values() for v in values])
        _labels(ax, title, xlabel, ylabel)
        ax.legend(loc="best", ncols=min(count, 4))
    return path


def heatmaps(
    path: Path,
    panels: Sequence[tuple[str, Sequence[int], Sequence[int], Sequence[Sequence[float]]]],
    *,
    title: str,
    colour_label: str,
) -> Path:
    """Side-by-side heatmaps (title, steps, prompt indices, matrix[prompt][step]) on one shared colour scale.

    Columns are drawn at their real step positions (steps need not be evenly spaced); NaN cells are light grey.
    """
    values = [v for _, _, _, matrix in panels for row in matrix for v in row if not math.isnan(v)]
    low, high = (0.0, 1.0) if values and all(0 <= v <= 1 for v in values) else (min(values, default=0), max(values, default=1))
    rows = max((len(p[2]) for p in panels), default=1)
    size = (WIDE[0], min(8.0, max(3.2, 1.4 + 0.17 * rows)))
    with _figure(path, size, ncols=len(panels)) as (fig, axes):
        image = None
        for ax, (name, steps, prompts, matrix) in zip(axes, panels):
            image = _heatmap_panel(ax, name, steps, prompts, matrix, low, high)
        if image is not None:
            fig.colorbar(image, ax=axes, label=colour_label, shrink=0.9, pad=0.01)
        fig.suptitle(title, x=0.01, ha="left", fontsize=STYLE["axes.titlesize"], fontweight="bold")
    return path


def _heatmap_panel(ax, name: str, steps, prompts, matrix, low: float, high: float):
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee")
    # cell edges halfway between steps, so uneven step spacing shows as uneven columns
    edges = _edges(list(steps))
    image = ax.pcolormesh(edges, range(len(prompts) + 1), matrix, cmap=cmap, vmin=low, vmax=high, shading="flat")
    ax.set_yticks([i + 0.5 for i in range(len(prompts))], [str(p) for p in prompts],
                  fontsize=8 if len(prompts) <= 30 else 6)
    ax.invert_yaxis()
    ax.grid(False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(name, loc="left", fontsize=10.5)
    ax.set_xlabel("RL step")
    ax.set_ylabel("training prompt #")
    return image


def _edges(steps: list[int]) -> list[float]:
    if len(steps) == 1:
        return [steps[0] - 0.5, steps[0] + 0.5]
    mids = [(a + b) / 2 for a, b in zip(steps, steps[1:])]
    return [steps[0] - (mids[0] - steps[0]), *mids, steps[-1] + (steps[-1] - mids[-1])]
