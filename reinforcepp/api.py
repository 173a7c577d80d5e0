"""`reinforcepp.train(config, overrides)`, the Python entry point of RL training: check, then train."""

from __future__ import annotations

from pathlib import Path

from reinforcepp.config import load_config
from reinforcepp.config.loader import ConfigSource, Overrides


def train(config: ConfigSource, overrides: Overrides = ()) -> Path:
    """The whole config is checked (load_config) before any model loads; then the loop runs."""
    cfg = load_config(config, overrides)
    from reinforcepp.train import loop

    return loop.train(cfg)
