"""Prompt data loading and ordering."""

from .prompts import (
    DataError,
    Prompt,
    PromptSampler,
    column_names,
    fill_missing_columns,
    read_jsonl,
    read_rows,
    tokenize_prompts,
)

__all__ = [
    "DataError",
    "Prompt",
    "PromptSampler",
    "column_names",
    "fill_missing_columns",
    "read_jsonl",
    "read_rows",
    "tokenize_prompts",
]
