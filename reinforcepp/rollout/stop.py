"""Per-sequence stopping: EOS token ids and stop strings.

A sequence stops at the first generated token that is an EOS id, or at the first token after which its
decoded response contains one of the stop strings; that token is kept (it gets mask 1), everything after it
is padding. Stop strings are checked by decoding only a bounded tail of each still-running sequence, so a
step costs O(batch x tail) whatever the response length.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

__all__ = ["resolve_eos_token_ids", "EosStopper", "StopStringMatcher"]


def _as_id_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.flatten().tolist()]
    if isinstance(value, Iterable):
        return [int(v) for v in value if v is not None]
    return []


def resolve_eos_token_ids(explicit: Sequence[int] = (), tokenizer: Any = None, model: Any = None) -> tuple[int, ...]:
    """The EOS ids to stop on: ``explicit`` when non-empty, else the union of the tokenizer's ``eos_token_id``
    and the model's ``generation_config.eos_token_id`` / ``config.eos_token_id`` (each may be an int or a
    list, e.g. several end-of-turn ids). Order: first seen first; duplicates dropped."""
    if explicit:
        ids = [int(i) for i in explicit]
    else:
        ids = _as_id_list(getattr(tokenizer, "eos_token_id", None))
        generation_config = getattr(model, "generation_config", None)
        ids += _as_id_list(getattr(generation_config, "eos_token_id", None))
        ids += _as_id_list(getattr(getattr(model, "config", None), "eos_token_id", None))
    return tuple(dict.fromkeys(ids))


class EosStopper:
    """``hits(tokens)``: bool [B], True where the token is one of the EOS ids (a batched op, no host sync)."""

    def __init__(self, eos_token_ids: Sequence[int], device: torch.device | str = "cpu"):
        self.eos_token_ids = tuple(int(i) for i in eos_token_ids)
        self.ids = torch.tensor(self.eos_token_ids, dtype=torch.long, device=device)  # [k] on the device

    def __bool__(self) -> bool:
        return bool(self.eos_token_ids)

    def hits(self, tokens: torch.Tensor) -> torch.Tensor:
        if len(self.eos_token_ids) == 1:
            return tokens == self.eos_token_ids[0]
        if not self.eos_token_ids:
            return torch.zeros_like(tokens, dtype=torch.bool)
        return torch.isin(tokens, self.ids)


class StopStringMatcher:
    """Tracks each sequence's response tokens and reports which ones now contain a stop string.

    Call :meth:`update` once per decoding step with the still-running sequences (their row numbers in the
    full batch) and the token each just generated. Only the last ``tail_tokens`` tokens of a sequence are
    decoded; the default (4 x the longest stop string in characters, + 4) covers a stop string even when
    byte-level tokens split characters. Because every step is checked, a stop string is found at the token
    that completes it. Decoding keeps special tokens and does not clean up spaces, so the text is the
    literal concatenation of the tokens.
    """

    def __init__(
        self,
        tokenizer: Any,
        stop_strings: Sequence[str],
        num_sequences: int,
        tail_tokens: int | None = None,
    ):
        self.stop_strings = tuple(s for s in stop_strings if s)
        if not self.stop_strings:
            raise ValueError("StopStringMatcher needs at least one non-empty stop string")
        if tokenizer is None:
            raise ValueError("stop strings need a tokenizer to decode the responses")
        self.tokenizer = tokenizer
        longest = max(len(s) for s in self.stop_strings)
        self.tail_tokens = tail_tokens if tail_tokens is not None else 4 * longest + 4
        self.history: list[list[int]] = [[] for _ in range(num_sequences)]

    def _decode(self, tails: list[list[int]]) -> list[str]:
        return self.tokenizer.batch_decode(tails, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def update(self, rows: Sequence[int], tokens: Sequence[int]) -> list[int]:
        """Append ``tokens[i]`` to sequence ``rows[i]``; return the rows whose response now contains a stop string."""
        if not rows:
            return []
        tails = []
        for row, token in zip(rows, tokens):
            hist = self.history[row]
            hist.append(int(token))
            tails.append(hist[-self.tail_tokens :])
        texts = self._decode(tails)
        return [row for row, text in zip(rows, texts) if any(s in text for s in self.stop_strings)]
