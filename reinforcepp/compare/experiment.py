"""The experiment file of `reinforcepp compare`: which presets to run on which shared config and seeds, and
how each run's config is composed from them.

A run's config = schema defaults <- shared config <- preset <- experiment overrides <- run overrides <-
command-line overrides, then the ``budget`` (in prompts or in samples per step, so a preset drawing one sample
per prompt and one drawing four can be given the same samples) and ``seed`` and ``output_dir`` set by the runner.
Overrides are dotted ``key=value`` strings or a mapping shaped like the config. The layers are merged as plain
mappings and validated once, with the config's own validation, so a run's errors read like any config error.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from reinforcepp.config import Config, ConfigError, validate_config
from reinforcepp.config.errors import config_error_from
from reinforcepp.config.schema import RolloutConfig
from reinforcepp.config.loader import _apply_override
from reinforcepp.config.sources import config_path, deep_merge, is_preset_name, read_config_data, read_yaml
from reinforcepp.presets import preset_names
from reinforcepp.report.html import slug  # labels are free text such as 'REINFORCE++'

# Set by the runner for every run: an override of these would be silently replaced, so it is refused.
RUNNER_FIELDS = ("seed", "output_dir")
BUDGET_FIELDS = {"samples_per_step": "rollout.batch_size", "prompts_per_step": "rollout.batch_size",
                 "steps": "train.num_steps"}


def dotted_overrides(value: Any) -> Any:
    """Overrides given as a mapping shaped like the config, as the dotted ``key=value`` strings they stand for
    (the value as JSON, which the override parser reads back as YAML with its type); a list is kept."""
    if isinstance(value, Mapping):
        return [f"{key}={json.dumps(leaf)}" for key, leaf in flatten(value)]
    return value


class RunSpec(BaseModel):
    """One label of the comparison: an algorithm preset and the overrides specific to it."""

    model_config = ConfigDict(extra="forbid")
    preset: str = Field(description="A preset name (`reinforcepp presets`) or a path to a YAML config.")
    overrides: list[str] = Field(
        default_factory=list,
        description="Overrides of this run only: dotted key=value strings, or a mapping shaped like the config.",
    )

    @field_validator("overrides", mode="before")
    @classmethod
    def _dotted(cls, value: Any) -> Any:
        return dotted_overrides(value)


class BudgetSpec(BaseModel):
    """What every run draws: prompts or samples per step (each run's rollout.batch_size follows from its
    rollout.n_samples_per_prompt), and the number of steps."""

    model_config = ConfigDict(extra="forbid")
    samples_per_step: PositiveInt | None = Field(
        None, description="Samples per RL step of every run: rollout.batch_size = this / rollout.n_samples_per_prompt.")
    prompts_per_step: PositiveInt | None = Field(
        None, description="Prompts per RL step of every run (rollout.batch_size).")
    steps: PositiveInt | None = Field(None, description="RL steps of every run (train.num_steps).")

    @model_validator(mode="after")
    def _one_per_step_unit(self) -> BudgetSpec:
        if self.samples_per_step is not None and self.prompts_per_step is not None:
            raise ValueError("give samples_per_step or prompts_per_step, not both")
        if self.samples_per_step is None and self.prompts_per_step is None and self.steps is None:
            raise ValueError("give samples_per_step or prompts_per_step, and/or steps")
        return self

    def apply(self, data: dict[str, Any]) -> None:
        """Set rollout.batch_size and train.num_steps of one run's merged config data."""
        rollout = data.setdefault("rollout", {})
        if self.prompts_per_step is not None:
            rollout["batch_size"] = self.prompts_per_step
        if self.samples_per_step is not None:
            n = rollout.get("n_samples_per_prompt", RolloutConfig.model_fields["n_samples_per_prompt"].default)
            if not isinstance(n, int) or n < 1 or self.samples_per_step % n:
                raise ConfigError(f"budget.samples_per_step: {self.samples_per_step} samples per step are not whole "
                                  f"prompts of rollout.n_samples_per_prompt = {n} samples; use a multiple of {n}")
            rollout["batch_size"] = self.samples_per_step // n
        if self.steps is not None:
            data.setdefault("train", {})["num_steps"] = self.steps

    def fields_set(self) -> list[str]:
        """The config fields this budget sets."""
        return sorted({BUDGET_FIELDS[name] for name in BUDGET_FIELDS if getattr(self, name) is not None})


class ExperimentSpec(BaseModel):
    """The experiment file as written; paths in it are relative to the file."""

    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(None, description="Report title; default 'Comparison: A vs B'.")
    config: str | dict[str, Any] | None = Field(
        None, description="Shared config: a YAML path or an inline mapping (model, data, budget, eval)."
    )
    overrides: list[str] = Field(
        default_factory=list, description="Overrides of every run: dotted key=value strings, or a mapping."
    )
    budget: BudgetSpec | None = Field(
        None, description="Prompts or samples per step and steps of every run (sets rollout.batch_size, "
        "train.num_steps); None = as the config says."
    )
    seeds: list[int] | None = Field(None, description="Seeds of every run; default [the config's seed].")
    runs: dict[str, RunSpec] = Field(description="label -> run; the first label is the baseline of ratios.")

    @field_validator("overrides", mode="before")
    @classmethod
    def _dotted(cls, value: Any) -> Any:
        return dotted_overrides(value)

    @field_validator("runs")
    @classmethod
    def _some_runs(cls, runs: dict[str, RunSpec]) -> dict[str, RunSpec]:
        if not runs:
            raise ValueError("needs at least one run")
        return runs

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
            raise ValueError(f"needs distinct seeds, got {seeds}")
        return seeds


@dataclass
class ResolvedRun:
    """One training run of the comparison: a label, a seed and the validated config."""

    label: str
    seed: int
    preset: str
    cfg: Config

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.output_dir)


@dataclass
class Experiment:
    """Every run of a comparison, validated, in report order (labels first, then seeds)."""

    title: str | None
    out_dir: Path
    runs: list[ResolvedRun]
    warnings: list[str]

    def labels(self) -> dict[str, list[Path]]:
        """label -> run dirs, the shape write_compare_report takes."""
        grouped: dict[str, list[Path]] = {}
        for run in self.runs:
            grouped.setdefault(run.label, []).append(run.run_dir)
        return grouped


def load_experiment_spec(path: str | os.PathLike) -> ExperimentSpec:
    """Parse and validate an experiment file; errors name the file and the bad field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file not found: {path}")
    data = read_yaml(path)
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        problems = config_error_from(exc, ExperimentSpec).problems
        raise ConfigError(*(f"{path}: {problem}" for problem in problems)) from None


def quick_spec(config: str | None, presets: Sequence[str]) -> ExperimentSpec:
    """The experiment of `compare --config FILE --presets A B`: one run per preset, labelled by its name."""
    if not presets:
        raise ConfigError("--presets: name at least one preset (or pass an experiment file)")
    return ExperimentSpec(config=config, runs={_preset_label(p): RunSpec(preset=p) for p in presets})


def _preset_label(preset: str) -> str:
    """A preset given as a path is labelled by its file stem, a name by itself."""
    return preset if is_preset_name(preset) else Path(preset).stem


def resolve_experiment(
    spec: ExperimentSpec,
    out_dir: str | os.PathLike,
    *,
    base_dir: str | os.PathLike = ".",
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
) -> Experiment:
    """Validate every run's config before anything runs; all problems of all runs are raised together.

    ``base_dir`` is where relative shared-config and preset paths are looked up (the experiment file's folder);
    ``seeds`` and ``overrides`` come from the command line and beat the file's.
    """
    base, out = Path(base_dir), Path(out_dir)
    _check_labels(spec.runs)
    shared = _shared_config(spec.config, base)
    problems: list[str] = []
    runs: list[ResolvedRun] = []
    caught_warnings: list[str] = []
    for label, run_spec in spec.runs.items():
        try:
            layers = [*spec.overrides, *run_spec.overrides, *overrides]
            _refuse_runner_fields(layers)
            data = compose(shared, run_spec.preset, layers, base)
            if spec.budget is not None:
                _refuse_budget_fields(spec.budget, shared, layers)
                spec.budget.apply(data)
            for seed in seeds or spec.seeds or [data.get("seed", Config.model_fields["seed"].default)]:
                cfg, messages = _validate_run(data, seed, out / slug(label) / f"seed{seed}")
                runs.append(ResolvedRun(label, seed, run_spec.preset, cfg))
                caught_warnings += [f"{label}: {m}" for m in messages if f"{label}: {m}" not in caught_warnings]
        except ConfigError as exc:
            problems += [f"run {label!r}: {problem}" for problem in exc.problems if
                         f"run {label!r}: {problem}" not in problems]
    if problems:
        raise ConfigError(*problems)
    return Experiment(spec.title, out, runs, caught_warnings)


def compose(shared: Mapping[str, Any], preset: str, overrides: Sequence[str], base_dir: Path) -> dict[str, Any]:
    """The merged config data of one run (not yet validated): shared <- preset <- overrides; and
    log.prompt_rewards=true unless some layer set it, since the report draws per-prompt curves."""
    preset_data = read_config_data(preset, base_dir)
    _refuse_shared_preset_fields(shared, preset_data, preset)
    data = deep_merge(shared, preset_data)
    for override in overrides:
        _apply_override(data, override)
    log = data.setdefault("log", {})
    if isinstance(log, dict):  # anything else is reported by validation
        log.setdefault("prompt_rewards", True)
    return data


def resolve_preset(preset: str, base_dir: Path = Path(".")) -> Path:
    """The YAML file of a run's preset: a shipped preset by name, else a path relative to ``base_dir``."""
    return config_path(preset, base_dir)


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted.key, value) of every leaf of a nested mapping; an empty section is no leaf."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, dotted + ".")
        else:
            yield dotted, value


def _check_labels(runs: Mapping[str, RunSpec]) -> None:
    """Two labels with the same directory name would train into the same run dirs."""
    seen: dict[str, str] = {}
    for label in runs:
        other = seen.setdefault(slug(label), label)
        if other != label:
            raise ConfigError(f"runs: labels {other!r} and {label!r} share the directory name {slug(label)!r}")


def _shared_config(config: str | dict[str, Any] | None, base_dir: Path) -> dict[str, Any]:
    """The shared config as data: a file (relative to the experiment file), an inline mapping, or nothing."""
    if config is None:
        return {}
    if isinstance(config, dict):
        return config
    path = Path(config)
    return read_yaml(path if path.is_absolute() else base_dir / path)


def _refuse_shared_preset_fields(shared: Mapping[str, Any], preset_data: Mapping[str, Any], preset: str) -> None:
    """The shared config must not silently change the algorithm: a field both set is an error, not a merge."""
    shared_keys = [key for key, _ in flatten(shared)]
    preset_keys = [key for key, _ in flatten(preset_data)]
    clashes = [s for s in shared_keys if any(s == p or p.startswith(s + ".") or s.startswith(p + ".")
                                             for p in preset_keys)]
    if clashes:
        raise ConfigError(*(f"config: sets {key}, which preset {preset!r} defines; set it in the run's overrides "
                            "instead" for key in clashes))


def _refuse_budget_fields(budget: BudgetSpec, shared: Mapping[str, Any], overrides: Sequence[str]) -> None:
    """A field the budget sets must not also be set by the shared config or an override: which would win?"""
    keys = {key for key, _ in flatten(shared)} | {o.partition("=")[0].strip() for o in overrides}
    clashes = [field for field in budget.fields_set() if field in keys]
    if clashes:
        raise ConfigError(*(f"budget: sets {field}, which the shared config or an override sets too; set it in "
                            "one place" for field in clashes))


def _refuse_runner_fields(overrides: Sequence[str]) -> None:
    """seed and output_dir are the runner's: --seeds / seeds: and --output say where and with what."""
    for override in overrides:
        key = override.partition("=")[0].strip()
        if key in RUNNER_FIELDS:
            raise ConfigError(f"override {override!r}: compare sets {key} per run; use seeds: / --seeds and --output")


def _validate_run(data: Mapping[str, Any], seed: int, run_dir: Path) -> tuple[Config, list[str]]:
    """Validate one run's data with its seed and directory; returns the config and its warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = validate_config({**data, "seed": seed, "output_dir": str(run_dir)})
    if cfg.train.eval_every <= 0:
        raise ConfigError("train.eval_every: compare needs held-out curves; set train.eval_every > 0 "
                          "(and data.eval_prompts)")
    return cfg, [str(w.message) for w in caught]


def experiment_yaml(experiment: Experiment) -> str:
    """The resolved experiment: every run's full config, so a comparison can be read (and rerun) from it alone."""
    runs = [{"label": r.label, "seed": r.seed, "preset": r.preset, "config": r.cfg.model_dump(mode="json")}
            for r in experiment.runs]
    return yaml.safe_dump({"title": experiment.title, "output": str(experiment.out_dir), "runs": runs},
                          sort_keys=False)
