"""The algorithm presets, shipped inside the package (package data): `<name>.yaml` sets only the fields that
define its method; its first line, a comment, says what it is in one line (`reinforcepp presets`)."""

from __future__ import annotations

from pathlib import Path

PRESETS_DIR = Path(__file__).resolve().parent


def preset_names() -> list[str]:
    """Every shipped preset, sorted."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def preset_file(name: str) -> Path | None:
    """The YAML file of a shipped preset; None when there is no such preset."""
    path = PRESETS_DIR / f"{name}.yaml"
    return path if name in preset_names() else None


def preset_summary(name: str) -> str:
    """The preset's one-line description: its first line, a YAML comment."""
    first = (PRESETS_DIR / f"{name}.yaml").read_text().partition("\n")[0]
    return first.removeprefix("#").strip()


def preset_table() -> str:
    """One line per preset: its name, then its one-line description."""
    names = preset_names()
    width = max(map(len, names)) + 2
    return "\n".join(f"{name:<{width}}{preset_summary(name)}" for name in names)
