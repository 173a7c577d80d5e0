"""Scoring: decode the responses and turn them into one scalar reward per sequence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from reinforcepp.data import Prompt, column_names
from reinforcepp.rewards import score_completions
from reinforcepp.rollout import Rollout


def response_token_ids(rollout: Rollout) -> list[list[int]]:
    """The token ids of each response, EOS included and padding left out (TRL's ``completion_ids``)."""
    return [row[mask.bool()].tolist() for row, mask in zip(rollout.response_ids, rollout.response_mask)]


def reward_column_names(rows: list[dict[str, Any]], prompt_key: str) -> list[str]:
    """The columns a reward function gets by name: every column but the prompt (that one is ``prompts``)."""
    return [name for name in column_names(rows) if name != prompt_key]


def reward_columns(rows: list[dict[str, Any]], prompt_key: str) -> dict[str, list[Any]]:
    """Column name -> one value per row (None where a row lacks the column)."""
    return {name: [row.get(name) for row in rows] for name in reward_column_names(rows, prompt_key)}


class Scorer:
    """Raw rewards R [B] for a rollout of ``n`` samples per prompt, from a reward function
    (called with keywords: prompts, completions, completion_ids and every other column of the prompt
    rows) or a Bradley-Terry reward model (its score of prompt + response)."""

    def __init__(self, tokenizer, *, function: Callable | None = None, reward_model=None, prompt_key: str = "prompt",
                 timeout: float | None = None, normalize_with_model: bool = False):
        self.tokenizer, self.function, self.reward_model, self.prompt_key = tokenizer, function, reward_model, prompt_key
        self.timeout, self.normalize_with_model = timeout, normalize_with_model

    def __call__(self, prompts: list[Prompt], rollout: Rollout, n: int) -> torch.Tensor:
        rows = [p.row for p in prompts for _ in range(n)]
        if self.reward_model is not None:
            return self._model_scores(rollout)
        ids = response_token_ids(rollout)
        completions = self.tokenizer.batch_decode(ids, skip_special_tokens=True)  # without the EOS token
        texts = [row[self.prompt_key] for row in rows]
        scores = score_completions(self.function, texts, completions, reward_columns(rows, self.prompt_key),
                                   completion_ids=ids, timeout=self.timeout)
        return torch.tensor(scores, dtype=torch.float32)  # NaN where the function returned None

    @torch.no_grad()
    def _model_scores(self, rollout: Rollout) -> torch.Tensor:
        device = next(self.reward_model.parameters()).device
        input_ids = torch.cat([rollout.prompt_ids, rollout.response_ids], dim=1).to(device)
        attention_mask = torch.cat([rollout.prompt_mask, rollout.response_mask], dim=1).to(device)
        scores = self.reward_model.score(input_ids, attention_mask, normalize=self.normalize_with_model)
        return scores.float().cpu()


def drop_unscored(rewards: torch.Tensor, response_mask: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples the reward function skipped (NaN) leave the update: their response mask becomes 0 (no
    loss, no whitening statistics) and their reward becomes the mean of the scored samples of their
    prompt, so the group-mean baselines of the others do not move (TRL's nanmean, made explicit).

    Shapes: rewards [B], response_mask [B, T] -> (rewards [B] without NaN, response_mask [B, T]).
    """
    scored = torch.isfinite(rewards)
    if bool(scored.all()):
        return rewards, response_mask
    groups = rewards.view(-1, n)
    group_mean = torch.nanmean(groups, dim=1, keepdim=True).nan_to_num(0.0)  # an all-skipped group: 0
    filled = torch.where(torch.isfinite(groups), groups, group_mean).view(-1)
    return filled, response_mask * scored[:, None].to(response_mask.dtype)
