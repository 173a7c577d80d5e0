"""Prompt data: read rows, tokenize them, and serve them in a seeded, resumable order."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rendering import render_prompt

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad prompt data; the message names the file and line."""


def read_rows(path: str | Path, prompt_key: str) -> list[dict[str, Any]]:
    """Rows of a prompt set: a JSONL file, a Parquet file, or a Hugging Face ``datasets`` directory
    saved with ``save_to_disk`` (``DIR:split`` picks a split of a saved DatasetDict).

    Every row must have a string ``prompt_key``; the error names the file and row (line for JSONL).
    """
    text = str(path)
    directory, _, split = text.rpartition(":") if ":" in text and not Path(text).exists() else (text, "", "")
    if Path(directory).is_dir():
        return _check_rows(_read_saved_dataset(Path(directory), split), prompt_key, str(directory))
    path = Path(text)
    if path.suffix == ".parquet":
        if not path.is_file():
            raise DataError(f"prompt file not found: {path}")
        import pyarrow.parquet as pq  # imported at the edge: only Parquet users need it

        return _check_rows(pq.read_table(path).to_pylist(), prompt_key, str(path))
    return read_jsonl(path, prompt_key)


def _read_saved_dataset(directory: Path, split: str) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{directory}: reading a saved dataset needs the 'datasets' package") from None
    try:
        data = datasets.load_from_disk(str(directory))
    except FileNotFoundError as exc:
        raise DataError(f"{directory}: not a dataset saved with save_to_disk ({exc})") from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise DataError(f"{directory}: a DatasetDict; pick a split as {directory}:SPLIT, one of {list(data)}")
        data = data[split]
    return data.to_list()


def check_string_column(rows: list[Any], key: str, source: str) -> None:
    """Every row is a mapping with a string ``key``; the error names the source and the row."""
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get(key), str):
            raise DataError(f"{source}, row {i}: expected a string column {key!r}")


def _check_rows(rows: list[Any], prompt_key: str, source: str) -> list[dict[str, Any]]:
    check_string_column(rows, prompt_key, source)
    for i, row in enumerate(rows):
        if is_blank(row[prompt_key]):
            raise DataError(f"{source}, row {i}: empty prompt in {prompt_key!r}")
    if not rows:
        raise DataError(f"{source}: no prompts")
    return rows


def is_blank(prompt: str) -> bool:
    """An empty or whitespace-only prompt asks nothing (and an empty one has no token to generate from)."""
    return not prompt.strip()


def column_names(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Every key of any row, first seen first (JSONL rows need not all have the same keys)."""
    return list(dict.fromkeys(name for row in rows for name in row))


def fill_missing_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with every column of the set, None where a row lacks one (as ``datasets`` reads such a
    file), so every batch hands the reward function the same columns whichever rows it holds."""
    names = column_names(rows)
    if all(len(row) == len(names) for row in rows):
        return rows
    return [{name: row.get(name) for name in names} for row in rows]


def write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    """Write ``rows`` as JSON Lines (one object per line, UTF-8); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | Path, prompt_key: str) -> list[dict[str, Any]]:
    """Rows of a JSONL file; every row must be an object with a string ``prompt_key``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prompt file not found: {path}")
    rows = []
    with path.open("rb") as f:  # bytes, decoded per line: a non-UTF-8 line is named by its number
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = f"byte {raw[exc.start]:#04x} at column {exc.start + 1}"
                raise DataError(f"{path}:{line_no}: not UTF-8 text ({bad})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get(prompt_key), str):
                raise DataError(f"{path}:{line_no}: expected an object with a string {prompt_key!r}")
            if is_blank(row[prompt_key]):
                raise DataError(f"{path}:{line_no}: empty prompt in {prompt_key!r}")
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no prompts")
    return rows


@dataclass
class Prompt:
    """One tokenized prompt and its row (the label and any extra columns go to the reward)."""

    text: str
    token_ids: list[int]
    row: dict[str, Any]


def tokenize_prompts(
    rows: list[dict[str, Any]], tokenizer, *, prompt_key: str, max_len: int, chat_template: bool
) -> tuple[list[Prompt], int]:
    """Tokenize rows, applying the chat template when asked and the tokenizer has one.

    Prompts longer than ``max_len`` tokens are skipped, never truncated (a cut prompt asks another
    question); returns (prompts, number skipped).
    """
    prompts, skipped = [], 0
    for row in rows:
        text, ids = render_prompt(tokenizer, row[prompt_key], chat_template=chat_template)
        if not ids:  # generation needs at least one token to start from
            raise DataError(f"prompt {text[:80]!r} has no tokens after tokenization")
        if len(ids) > max_len:
            skipped += 1
            continue
        prompts.append(Prompt(text=text, token_ids=ids, row=row))
    if skipped:
        log.warning("skipped %d prompts longer than %d tokens", skipped, max_len)
    if not prompts:
        raise DataError(f"every prompt is longer than data.max_prompt_len={max_len} tokens")
    return prompts, skipped


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """A shuffled order of range(n) that depends only on (seed, epoch)."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


@dataclass
class PromptSampler:
    """Serves prompts in a fresh seeded permutation each epoch (in file order with ``shuffle=False``);
    its state is two integers.

    The order depends only on (seed, epoch), so a resumed run sees the same prompts as an
    uninterrupted one.
    """

    num_prompts: int
    seed: int
    shuffle: bool = True
    epoch: int = 0
    position: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def next_indices(self, k: int) -> list[int]:
        """The next k prompt indices, rolling into the next epoch when this one runs out."""
        out = []
        while len(out) < k:
            if not self._order:
                self._order = (epoch_permutation(self.num_prompts, self.seed, self.epoch) if self.shuffle
                               else list(range(self.num_prompts)))
            take = min(k - len(out), self.num_prompts - self.position)
            out.extend(self._order[self.position : self.position + take])
            self.position += take
            if self.position == self.num_prompts:
                self.epoch, self.position, self._order = self.epoch + 1, 0, []
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self._order = state["epoch"], state["position"], []
