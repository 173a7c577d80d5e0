"""Where config data comes from: a preset by name, a YAML file, and the `preset:` key that layers a preset
under the file (or mapping) that names it.

A source written as a bare word (no '/' and no .yaml/.yml suffix) is a shipped preset, whatever files the
working directory holds; anything else is a YAML file path, relative to ``base_dir`` (the working directory
on the command line; in a file, the folder of the file that names it). So ``--config grpo`` is the preset,
``--config grpo.yaml`` or ``--config ./grpo`` a file. The layers, lowest first: schema defaults < preset <
the file's own fields < overrides.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from reinforcepp.config.errors import ConfigError
from reinforcepp.presets import preset_file, preset_names

PRESET_KEY = "preset"


def is_preset_name(source: str | os.PathLike) -> bool:
    """A bare word names a preset; a path object, a '/' or a .yaml/.yml suffix make a file path."""
    return isinstance(source, str) and "/" not in source and os.sep not in source and not source.endswith(
        (".yaml", ".yml"))


def config_path(source: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> Path:
    """The YAML file of a source: a shipped preset's, or the file itself (relative paths from ``base_dir``)."""
    if is_preset_name(source):
        path = preset_file(str(source))
        if path is None:
            raise ConfigError(f"preset {str(source)!r}: no such preset; presets: {', '.join(preset_names())} "
                              "(a YAML file is a path ending in .yaml or holding a '/')")
        return path
    path = Path(source)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return path


def read_config_data(source: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The config data of a preset or YAML file, over the preset it names under `preset:` (if any)."""
    return _layered(config_path(source, base_dir), ())


def with_preset(data: Mapping[str, Any], base_dir: str | os.PathLike | None = None, *,
                _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """``data`` over the preset it names under `preset:` (the key removed); unchanged without one."""
    data = dict(data)
    if PRESET_KEY not in data:
        return data
    preset = data.pop(PRESET_KEY)
    where = f"{_chain[-1]}: " if _chain else ""
    if not isinstance(preset, str) or not preset:
        raise ConfigError(f"{where}preset: expected a preset name or a YAML file path, got {preset!r}")
    return deep_merge(_layered(config_path(preset, base_dir), _chain), data)


def _layered(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        loop = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"{chain[-1]}: preset: the presets name each other in a loop: {loop}")
    return with_preset(read_yaml(path), path.parent, _chain=(*chain, resolved))


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file's top-level mapping; an empty file is an empty mapping."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML{yaml_where(exc)}") from None
    if data is None:  # an empty file means "all defaults"
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: the top level must be a mapping of config keys, got {kind}")
    return data


def yaml_where(exc: yaml.YAMLError) -> str:
    """" at line L, column C: problem" from a YAML error, whose own text spans several lines."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {problem or exc}"


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, section by section; neither input is modified."""
    merged = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
