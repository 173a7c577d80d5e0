"""Read a YAML config, apply `dotted.key=value` overrides, validate; and write one back."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from reinforcepp.config.errors import ConfigError, section_model
from reinforcepp.config.schema import Config, validate_config


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """The validated Config from `path` (None = schema defaults) with `overrides` applied in order."""
    data = _read_yaml(Path(path)) if path is not None else {}
    for override in overrides:
        _apply_override(data, override)
    return validate_config(data)


def config_to_yaml(cfg: Config) -> str:
    """The fully resolved config as YAML; load_config reads it back to an equal Config."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_to_yaml(cfg))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML{_yaml_where(exc)}") from None
    if data is None:  # an empty file means "all defaults"
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: the top level must be a mapping of config keys, got {kind}")
    return data


def _yaml_where(exc: yaml.YAMLError) -> str:
    """" at line L, column C: problem" from a YAML error, whose own text spans several lines."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {problem or exc}"


def _apply_override(data: dict[str, Any], override: str) -> None:
    """Set `a.b.c=value` in `data`; the value is YAML: `0.001`, `null`, `true`, `[1, 2]` keep their types."""
    key, sep, raw_value = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"override {override!r}: expected dotted.key=value")
    _reject_setting_as_section(override, parts)
    try:
        value = yaml.safe_load(raw_value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: the value is not valid YAML{_yaml_where(exc)}") from None
    node = data
    for depth, part in enumerate(parts[:-1], start=1):
        if node.get(part) is None:  # absent, or an optional section that is off (null): setting a key turns it on
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            prefix = ".".join(parts[:depth])
            raise ConfigError(f"override {override!r}: {prefix} is {node!r}, not a section with keys")
    node[parts[-1]] = value


def _reject_setting_as_section(override: str, parts: list[str]) -> None:
    """`seed.x=1` descends through a setting; say so rather than report a type error on `seed`."""
    model: type[BaseModel] = Config
    for depth, part in enumerate(parts[:-1], start=1):
        field = model.model_fields.get(part)
        if field is None:
            return  # an unknown key: validation reports it with a did-you-mean hint
        section = section_model(field.annotation)
        if section is None:
            raise ConfigError(f"override {override!r}: {'.'.join(parts[:depth])} is a setting, not a section")
        model = section
