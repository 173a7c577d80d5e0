"""Counter-based random numbers for sampling: the uniform number that draws token t of a row depends only
on the row's key and t, never on which other rows share the batch, the rank, or the row's place in it.

That is what makes a run on N data-parallel ranks sample exactly what one process samples (each rank
rolls out a slice of the prompts), and what lets the engine split, compact or reorder rows freely.

Keys are int64 tensors; the mixing function is SplitMix64's finalizer (Steele et al., 2014) in wrapping
64-bit integer arithmetic, which torch performs on every device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64
_MUL1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MUL2 = -7723592293110705685  # 0x94D049BB133111EB


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic: mask the sign bits it copies in)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finalizer: a bijection of int64 whose output bits each depend on every input bit."""
    x = x + _GOLDEN
    x = (x ^ _shift_right(x, 30)) * _MUL1
    x = (x ^ _shift_right(x, 27)) * _MUL2
    return x ^ _shift_right(x, 31)


def combine(key: torch.Tensor, counter: int | torch.Tensor) -> torch.Tensor:
    """A new key from a key and a counter (int64 tensors, broadcast)."""
    return mix64(mix64(key) ^ torch.as_tensor(counter, dtype=torch.int64, device=key.device))


def uniform_from_keys(keys: torch.Tensor) -> torch.Tensor:
    """One float32 uniform in [0, 1) per key ([B] int64 -> [B] float32): the top 24 bits, exact in float32."""
    return _shift_right(mix64(keys), 40).to(torch.float32) * 2.0**-24


@dataclass(frozen=True)
class RowStreams:
    """One random stream per sampled row. Shapes: keys [B] int64 (B = prompts x n, a prompt's n samples
    contiguous); the engine asks for one uniform per running row and decoding position."""

    keys: torch.Tensor

    @classmethod
    def for_prompts(cls, seed: int, step: int, prompt_positions: torch.Tensor, n: int) -> RowStreams:
        """Keys of the n samples of each prompt, from (seed, step, the prompt's position in the global
        batch, sample index); prompt_positions [P] int64 -> keys [P * n]."""
        base = combine(combine(torch.tensor(seed, dtype=torch.int64), step), prompt_positions.to(torch.int64))
        samples = torch.arange(n, dtype=torch.int64)
        return cls(combine(base[:, None], samples[None, :]).reshape(-1))

    def uniforms(self, position: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[R] uniforms for decoding position ``position`` of ``rows`` (indices into keys; None: all rows)."""
        keys = self.keys if rows is None else self.keys[rows.cpu()]
        return uniform_from_keys(combine(keys, position))
