"""Prompt data: read rows, tokenize them, and serve them in a seeded, resumable order."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .conversation import prompt_problem
from .errors import DataError
from .rendering import render_prompt

log = logging.getLogger(__name__)


def read_rows(path: str | Path, prompt_key: str | None) -> list[dict[str, Any]]:
    """Rows of a data set: a JSONL file, a Parquet file, a Hugging Face ``datasets`` directory saved with
    ``save_to_disk`` (``DIR:split`` picks a split of a saved DatasetDict), or anything ``datasets.load_dataset``
    loads (:func:`load_hf_dataset`: a hub id, a local dataset directory or script, as ``NAME``, ``NAME:SPLIT``
    or ``NAME/CONFIG:SPLIT``).

    Every row must have a prompt in ``prompt_key``: a non-blank string or, in TRL's conversational format, a
    list of messages; the error names the source and row (line for JSONL). ``prompt_key=None`` checks no
    prompt column (SFT ``messages`` rows and implicit-prompt preference pairs check their own).
    """
    text = str(path)
    whole = Path(text)
    if whole.suffix == ".parquet":
        if not whole.is_file():
            raise DataError(f"prompt file not found: {whole}")
        import pyarrow.parquet as pq  # imported at the edge: only Parquet users need it

        return _check_rows(pq.read_table(whole).to_pylist(), prompt_key, text)
    if whole.suffix in JSONL_SUFFIXES or (whole.is_file() and whole.suffix != ".py"):  # a script: load_dataset's
        return read_jsonl(whole, prompt_key)
    reference, _, split = text.rpartition(":") if ":" in text and not whole.exists() else (text, "", "")
    if is_saved_dataset(Path(reference)):
        return _check_rows(_read_saved_dataset(Path(reference), split), prompt_key, reference)
    return _check_rows(load_hf_dataset(text), prompt_key, text)


JSONL_SUFFIXES = (".jsonl", ".json")
SAVED_DATASET_FILES = ("dataset_dict.json", "state.json")  # what save_to_disk writes, and load_dataset's dirs lack


def is_saved_dataset(directory: Path) -> bool:
    """A directory written by ``save_to_disk`` (read with ``load_from_disk``, not ``load_dataset``)."""
    return directory.is_dir() and any((directory / name).is_file() for name in SAVED_DATASET_FILES)


def _datasets(source: str):
    try:
        import datasets
    except ImportError:
        raise DataError(f"{source}: reading a dataset needs the 'datasets' package") from None
    return datasets


def _read_saved_dataset(directory: Path, split: str) -> list[dict[str, Any]]:
    datasets = _datasets(str(directory))
    try:
        data = datasets.load_from_disk(str(directory))
    except FileNotFoundError as exc:
        raise DataError(f"{directory}: not a dataset saved with save_to_disk ({exc})") from None
    return _one_split(data, split, str(directory))


def _one_split(data: Any, split: str | None, source: str) -> Any:
    """The rows of ``split`` of a DatasetDict (the only split when none is named), of a Dataset as it is."""
    if hasattr(data, "keys"):  # a DatasetDict
        if not split and len(data) == 1:
            split = next(iter(data))
        if split not in data:
            raise DataError(f"{source}: a dataset with splits {list(data)}; pick one as {source}:SPLIT")
        data = data[split]
    return data.to_list()


def dataset_reference(text: str) -> tuple[str, str | None, str | None]:
    """(path, config, split) of ``NAME``, ``NAME:SPLIT`` or ``NAME/CONFIG:SPLIT`` as ``load_dataset`` takes
    them. NAME is a local directory or script (its path may hold slashes: the longest existing one is the
    name) or a hub id ``ORG/NAME``: so a hub dataset's config is its third part, ``openai/gsm8k/main:test``."""
    reference, _, split = text.rpartition(":") if ":" in text else (text, "", "")
    if Path(reference).exists():
        return reference, None, split or None
    head, _, tail = reference.rpartition("/")
    if head and (Path(head).exists() or head.count("/") == 1):
        return head, tail, split or None
    return reference, None, split or None


def load_hf_dataset(text: str) -> list[dict[str, Any]]:
    """The rows of ``datasets.load_dataset(NAME, CONFIG, split=SPLIT)`` (:func:`dataset_reference`); a
    dataset of several splits needs one named. Offline (HF_DATASETS_OFFLINE=1) a hub id is read from the
    cache. Any failure is one line naming the reference."""
    datasets = _datasets(text)
    path, config, split = dataset_reference(text)
    try:
        data = datasets.load_dataset(path, config, split=split)
    except Exception as exc:  # noqa: BLE001 - not found, offline, bad config or split: all one line
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{text}: not a prompt file, and datasets.load_dataset({path!r}, {config!r}, "
                        f"split={split!r}) failed: {why}") from None
    return _one_split(data, split, text)


def _check_rows(rows: list[Any], prompt_key: str | None, source: str) -> list[dict[str, Any]]:
    for i, row in enumerate(rows):
        problem = row_problem(row, prompt_key)
        if problem is not None:
            raise DataError(f"{source}, row {i}: {problem}")
    if not rows:
        raise DataError(f"{source}: no prompts")
    return rows


def row_problem(row: Any, prompt_key: str | None) -> str | None:
    """What is wrong with a row: not an object, no prompt in ``prompt_key``, or a bad prompt."""
    if not isinstance(row, dict):
        return "expected an object"
    if prompt_key is None:
        return None
    if prompt_key not in row:
        return f"expected an object with a string {prompt_key!r} (or a list of messages)"
    problem = prompt_problem(row[prompt_key])
    return None if problem is None else f"{prompt_key!r}: {problem}"


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


def read_jsonl(path: str | Path, prompt_key: str | None) -> list[dict[str, Any]]:
    """Rows of a JSONL file; every row must be an object with a prompt in ``prompt_key`` (:func:`row_problem`)."""
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
            problem = row_problem(row, prompt_key)
            if problem is not None:
                raise DataError(f"{path}:{line_no}: {problem}")
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
    rows: list[dict[str, Any]], tokenizer, *, prompt_key: str, max_len: int, chat_template: bool,
    source: str = "prompts",
) -> tuple[list[Prompt], int]:
    """Tokenize rows, applying the chat template when asked and the tokenizer has one (a conversational
    prompt needs it: an error naming ``source`` and the row otherwise).

    Prompts longer than ``max_len`` tokens are skipped, never truncated (a cut prompt asks another
    question); returns (prompts, number skipped).
    """
    prompts, skipped = [], 0
    for i, row in enumerate(rows):
        try:
            text, ids = render_prompt(tokenizer, row[prompt_key], chat_template=chat_template)
        except DataError as exc:
            raise DataError(f"{source}, row {i}: {prompt_key!r}: {exc}") from None
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
