"""Config errors: one `dotted.path: problem` line per problem, whatever raised it."""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """An invalid configuration; `problems` holds one line per problem."""

    def __init__(self, *problems: str) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class ConfigWarning(UserWarning):
    """A valid but probably unintended configuration."""


def config_error_from(exc: ValidationError, root: type[BaseModel]) -> ConfigError:
    """Turn pydantic's errors (field-level and cross-field) into one ConfigError."""
    problems: list[str] = []
    for error in exc.errors():
        nested = error.get("ctx", {}).get("error")
        if isinstance(nested, ConfigError):
            # Raised by a model validator: its lines already carry their field paths.
            problems.extend(nested.problems)
        else:
            problems.append(_describe(error, root))
    return ConfigError(*problems)


def _describe(error: Any, root: type[BaseModel]) -> str:
    loc = error["loc"]
    path = ".".join(str(part) for part in loc)
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key{_did_you_mean(root, loc)}"
    if error["type"] == "missing":
        return f"{path}: {error['msg']}"
    return f"{path}: {error['msg']} (got {error['input']!r})"


def _did_you_mean(root: type[BaseModel], loc: tuple) -> str:
    model = _model_at(root, loc[:-1])
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    model = root
    for part in loc:
        field = model.model_fields.get(str(part))
        model = section_model(field.annotation if field else None)
        if model is None:
            return None
    return model


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The section class of a field: ``Section`` or an optional ``Section | None`` (off when None); None for
    a setting."""
    members = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], BaseModel):
        return members[0]
    return None
