"""The rollout-engine interface: what the training loop asks of any generator (ours, vLLM, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from .streams import RowStreams


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``greedy`` ignores temperature/top-p/top-k (ReMax's baseline rollout)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0  # 1 = off
    top_k: int = 0  # 0 = off
    greedy: bool = False
    eos_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()  # a sequence stops once its decoded response contains one
    min_new_tokens: int = 0  # EOS ids get probability 0 for the first min_new_tokens tokens


@dataclass
class Rollout:
    """Sampled responses. B = number of prompts x n; the n samples of a prompt are contiguous.

    Shapes: prompt_ids, prompt_mask [B, Lp] (left padded); response_ids, response_mask, logprobs
    [B, T] (right padded, T = longest response); finished [B].
    """

    prompt_ids: torch.Tensor  # int64, pad id on padding
    prompt_mask: torch.Tensor  # int64, 1 on prompt tokens
    response_ids: torch.Tensor  # int64, pad id after a sequence stops
    response_mask: torch.Tensor  # int64, 1 on generated tokens (including the EOS / stop token)
    logprobs: torch.Tensor  # float32, log softmax(z / temperature) of each sampled token; 0 on padding
    finished: torch.Tensor  # bool, True if stopped by EOS or a stop string, False if cut at max_new_tokens

    @property
    def num_sequences(self) -> int:
        return self.response_ids.shape[0]

    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(dim=1)


class RolloutEngine(Protocol):
    """A generator of rollouts. The torch engine shares the policy module, so ``sync_weights`` is a
    no-op there; an engine with its own copy of the weights (vLLM) reloads them from the policy."""

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        n: int = 1,
        generator: torch.Generator | RowStreams | None = None,
    ) -> Rollout:
        """Sample ``n`` responses to each prompt (token ids, unpadded); ``generator`` makes it reproducible,
        and with :class:`~reinforcepp.rollout.streams.RowStreams` independent of how the batch is split."""
        ...

    def sync_weights(self, policy: torch.nn.Module) -> None:
        ...
