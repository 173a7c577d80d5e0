"""docs/config.md, generated from the schema (every key: type, default, description) and from the
docstrings of the cross-field checks. Regenerate after changing either:

    python -m reinforcepp.config.reference > docs/config.md
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from reinforcepp.config.checks import CHECKS, WARNINGS
from reinforcepp.config.errors import section_model
from reinforcepp.config.schema import Config

REGENERATE = "python -m reinforcepp.config.reference > docs/config.md"

INTRO = f"""# Configuration reference

<!-- Generated from reinforcepp/config/schema.py and reinforcepp/config/checks.py; do not edit.
     Regenerate: {REGENERATE} -->

Every key of the config tree: its type, default and meaning. A config is put together in layers, each over
the one before: the schema defaults below, a preset (`--config grpo`, or `preset: grpo` in your YAML file;
`reinforcepp presets` lists them), your YAML file, then `KEY=VALUE` overrides on the command line (or a
`{{"key": value}}` dict in Python, see [python_api.md](python_api.md)). A bare word (`grpo`) always names a
preset, a path with a `/` or a `.yaml` suffix always a file; a `preset:` path is relative to the file that names
it. `reinforcepp config [--config X] [KEY=VALUE ...]` prints the result. An unknown key, a bad value or a
broken rule between fields (listed at the end) is an error naming the field; nothing is silently changed.

Units where they trip people up: `rollout.batch_size` counts **prompts** per RL step; each prompt is sampled
`rollout.n_samples_per_prompt` times, so a step holds `rollout.batch_size x rollout.n_samples_per_prompt`
**samples**. `train.batch_size` and `train.micro_batch_size` count **samples** (completions). Lengths
(`rollout.max_new_tokens`, `data.max_prompt_len`, `sft.max_len`) count tokens.
"""


@dataclass
class Row:
    """One key of the tree; a section's row stands before its own keys."""

    key: str
    type: str
    default: str
    description: str
    section: type[BaseModel] | None = None


def rows(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[Row]:
    """Every key below ``model``, depth first in declaration order."""
    for name, field in model.model_fields.items():
        section = section_model(field.annotation)
        key = f"{prefix}{name}"
        yield Row(key, type_text(field), "" if section else default_text(field), field.description or "", section)
        if section is not None:
            yield from rows(section, key + ".")


def render() -> str:
    """The whole of docs/config.md."""
    all_rows = list(rows())
    parts = [INTRO, "## Top level\n", _table([r for r in all_rows if "." not in r.key and r.section is None])]
    for row in all_rows:
        if row.section is not None:
            parts.append(_section(row, [r for r in all_rows if r.key.rpartition(".")[0] == row.key]))
    parts.append("## Rules between fields\n\nEach broken rule is an error naming the first field; all are "
                 "reported at once.\n\n" + _rules(CHECKS))
    parts.append("## Warnings\n\nValid, but probably not what was meant: printed as `warning: ...`, the run goes "
                 "on.\n\n" + _rules(WARNINGS))
    return "\n".join(parts)


def type_text(field: FieldInfo) -> str:
    section = section_model(field.annotation)
    if section is not None:
        return "section" if section is field.annotation else "section, or null (off)"
    return _type(field.annotation, field.metadata)


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return _value(field.default_factory())
    if field.default is PydanticUndefined:
        return "(required)"
    return _value(field.default)


def first_sentence(text: str) -> str:
    """A description's first sentence (for one-line listings)."""
    head, dot, _ = text.partition(". ")
    return head + "." if dot else text


def _section(row: Row, children: list[Row]) -> str:
    depth = "#" * (row.key.count(".") + 2)
    doc = inspect.cleandoc(row.section.__dict__.get("__doc__") or "")  # a section class's own docstring
    about = " ".join(part for part in (doc, row.description) if part)
    if row.type != "section":
        about += " Off (null) unless set; setting any of its keys turns it on."
    keys = [child for child in children if child.section is None]
    return f"{depth} `{row.key}`\n\n{about}\n" + ("\n" + _table(keys) if keys else "")


def _table(table_rows: list[Row]) -> str:
    lines = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for r in table_rows:
        cells = (f"`{r.key}`", r.type, f"`{r.default}`", r.description)
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _rules(checks: tuple[Callable[..., Any], ...]) -> str:
    bullets = []
    for check in checks:
        for paragraph in inspect.cleandoc(check.__doc__ or "").split("\n\n"):
            bullets.append("- " + " ".join(paragraph.split()))
    return "\n".join(bullets) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _value(value: Any) -> str:
    """A default as it is written in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (tuple, list)):
        return json.dumps(list(value))
    return str(value)


def _type(annotation: Any, metadata: list[Any] = ()) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0], [*metadata, *args[1:]])
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in args)
    if origin in (typing.Union, types.UnionType):
        members = [_type(arg) for arg in args if arg is not type(None)]
        return " or ".join(members) + (", or null" if type(None) in args else "")
    if origin is tuple:
        return "[" + ", ".join(_type(arg) for arg in args) + "]"
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is collections.abc.Callable:
        return "callable (Python API)"
    name = getattr(annotation, "__name__", str(annotation))
    return name + _bounds(metadata)


def _bounds(metadata: list[Any]) -> str:
    """`> 0`, `>= 0`, `in [0, 1)` from annotated-types constraints (also inside a nested Field)."""
    limits: dict[str, Any] = {}
    for item in metadata:
        for constraint in getattr(item, "metadata", [item]):
            for attr in ("gt", "ge", "lt", "le"):
                if getattr(constraint, attr, None) is not None:
                    limits[attr] = getattr(constraint, attr)
    low = ("(", limits["gt"]) if "gt" in limits else ("[", limits["ge"]) if "ge" in limits else None
    high = (")", limits["lt"]) if "lt" in limits else ("]", limits["le"]) if "le" in limits else None
    if low and high:
        return f" in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f" {'>' if low[0] == '(' else '>='} {low[1]}"
    if high:
        return f" {'<' if high[0] == ')' else '<='} {high[1]}"
    return ""


def main() -> None:
    print(render(), end="")


if __name__ == "__main__":
    main()
