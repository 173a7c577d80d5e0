"""Build a validated Config from a preset, a YAML file, a mapping or a Config, with overrides; and write one back."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel

from reinforcepp.config.errors import ConfigError, section_model
from reinforcepp.config.schema import Config, validate_config
from reinforcepp.config.sources import PRESET_KEY, read_config_data, with_preset, yaml_where

# What a config may be given as, and its overrides (see load_config).
ConfigSource = Union[str, os.PathLike, Mapping[str, Any], Config, None]
Overrides = Union[Sequence[str], Mapping[str, Any], str]


def load_config(config: ConfigSource = None, overrides: Overrides = ()) -> Config:
    """The Config of ``config`` with ``overrides`` applied in order, after every check (field and cross-field).

    ``config``: None (the schema defaults), a preset name (``"grpo"``), a YAML file path, a mapping of config
    data, or a Config (checked again: edits to its sections skip the cross-field checks until then). A file or
    mapping may name a preset under ``preset:`` (a name, or a path relative to the file, or for a mapping to the
    working directory); its own fields lie over the preset's.
    ``overrides``: ``"dotted.key=value"`` strings (the value is YAML: ``0.001``, ``null``, ``[1, 2]``), or a
    mapping of dotted keys to Python values (``{"algo.kl.coef": 0.001, "reward.function": my_reward}``).
    """
    data = _config_data(config)
    for key, value, label in _override_items(overrides):
        _set_key(data, key, value, label)
    return validate_config(data)


def config_to_yaml(cfg: Config) -> str:
    """The fully resolved config as YAML; load_config reads it back to an equal Config."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_to_yaml(cfg))


def _config_data(config: ConfigSource) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Config):
        return config.model_dump()  # Python values: a reward callable stays itself
    if isinstance(config, Mapping):
        return with_preset(copy.deepcopy(dict(config)))  # overrides must not change the caller's mapping
    if isinstance(config, (str, os.PathLike)):
        return read_config_data(config)
    kind = type(config).__name__
    raise ConfigError(f"config: expected a preset name, a YAML file path, a mapping or a Config, got {kind}")


def _override_items(overrides: Overrides) -> list[tuple[str, Any, str]]:
    """(dotted key, value, how the user wrote it) of each override."""
    if isinstance(overrides, Mapping):
        return [(str(key), value, str(key)) for key, value in overrides.items()]
    items = []
    for override in [overrides] if isinstance(overrides, str) else overrides:
        if not isinstance(override, str):
            raise ConfigError(f"override {override!r}: expected 'dotted.key=value' (or a mapping of keys to values)")
        items.append(_parse_override(override))
    return items


def _parse_override(override: str) -> tuple[str, Any, str]:
    """`a.b.c=value`: the value is YAML, so `0.001`, `null`, `true`, `[1, 2]` keep their types."""
    key, sep, raw_value = override.partition("=")
    if not sep:
        raise ConfigError(f"override {override!r}: expected dotted.key=value")
    try:
        value = yaml.safe_load(raw_value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: the value is not valid YAML{yaml_where(exc)}") from None
    return key, value, override


def _apply_override(data: dict[str, Any], override: str) -> None:
    """Set `a.b.c=value` in `data`."""
    _set_key(data, *_parse_override(override))


def _set_key(data: dict[str, Any], key: str, value: Any, label: str) -> None:
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {label!r}: expected dotted.key=value")
    if parts == [PRESET_KEY]:
        raise ConfigError(f"override {label!r}: a preset lies under the config, not over it; name it with "
                          "--config NAME or a `preset:` line in the YAML file")
    _reject_setting_as_section(label, parts)
    node = data
    for depth, part in enumerate(parts[:-1], start=1):
        if node.get(part) is None:  # absent, or an optional section that is off (null): setting a key turns it on
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            prefix = ".".join(parts[:depth])
            raise ConfigError(f"override {label!r}: {prefix} is {node!r}, not a section with keys")
    node[parts[-1]] = value


def _reject_setting_as_section(label: str, parts: list[str]) -> None:
    """`seed.x=1` descends through a setting; say so rather than report a type error on `seed`."""
    model: type[BaseModel] = Config
    for depth, part in enumerate(parts[:-1], start=1):
        field = model.model_fields.get(part)
        if field is None:
            return  # an unknown key: validation reports it with a did-you-mean hint
        section = section_model(field.annotation)
        if section is None:
            raise ConfigError(f"override {label!r}: {'.'.join(parts[:depth])} is a setting, not a section")
        model = section
