"""`reinforcepp compare`: several algorithm presets on the same data, seeds and budget, one comparison report.

``compare(...)`` is the whole command; ``load_experiment_spec`` / ``resolve_experiment`` / ``run_experiment``
are its steps (validate every run first, then train, then report).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from reinforcepp.compare.experiment import (
    Experiment,
    ExperimentSpec,
    ResolvedRun,
    RunSpec,
    load_experiment_spec,
    preset_names,
    quick_spec,
    resolve_experiment,
    resolve_preset,
)
from reinforcepp.compare.runner import run_experiment
from reinforcepp.config import ConfigError

__all__ = [
    "Experiment",
    "ExperimentSpec",
    "ResolvedRun",
    "RunSpec",
    "compare",
    "default_output",
    "load_experiment_spec",
    "plan",
    "preset_names",
    "quick_spec",
    "resolve_experiment",
    "resolve_preset",
    "run_experiment",
]


def plan(
    experiment: str | os.PathLike | None = None,
    *,
    config: str | None = None,
    presets: Sequence[str] = (),
    output: str | os.PathLike | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
) -> Experiment:
    """Every run of the comparison, validated; nothing is written. Either an experiment file, or the quick form
    (a shared ``config`` and ``presets``)."""
    if experiment is not None and (config is not None or presets):
        raise ConfigError("pass either an experiment file or --config/--presets, not both")
    if experiment is None:
        spec, base_dir = quick_spec(config, presets), Path(".")
    else:
        spec, base_dir = load_experiment_spec(experiment), Path(experiment).parent
    out = Path(output) if output is not None else default_output(experiment, presets)
    return resolve_experiment(spec, out, base_dir=base_dir, seeds=seeds, overrides=overrides)


def compare(experiment: str | os.PathLike | None = None, **kwargs) -> Path:
    """Validate every run, train them one after another, write the report; returns report.html's path.
    Takes the arguments of ``plan``."""
    return run_experiment(plan(experiment, **kwargs))


def default_output(experiment: str | os.PathLike | None, presets: Sequence[str] = ()) -> Path:
    """runs/compare/<experiment file stem>, or runs/compare/<A>_vs_<B> for the quick form."""
    name = Path(experiment).stem if experiment is not None else "_vs_".join(Path(p).stem for p in presets)
    return Path("runs/compare") / (name or "quick")
