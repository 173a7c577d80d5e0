"""Scoring: decode the responses and turn them into one scalar reward per sequence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from reinforcepp.algos.dtypes import FLOAT32_MAX, beyond_float32
from reinforcepp.data import Prompt, column_names
from reinforcepp.rewards import RewardError, score_completions
from reinforcepp.rewards.function import function_name
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

    @property
    def name(self) -> str:
        """The reward source, for messages."""
        if self.reward_model is not None:
            return "the reward model"
        return f"reward function {function_name(self.function)}"

    def __call__(self, prompts: list[Prompt], rollout: Rollout, n: int) -> torch.Tensor:
        """Raw rewards [B], float32: NaN where the function returned None (skip); a score float32 cannot hold
        (or a non-finite score of the reward model) is an error naming the sample."""
        rows = [p.row for p in prompts for _ in range(n)]
        if self.reward_model is not None:
            scores = self._model_scores(rollout).double()
            self._check(scores, ~torch.isfinite(scores), prompts, n)
            return scores.float()
        ids = response_token_ids(rollout)
        completions = self.tokenizer.batch_decode(ids, skip_special_tokens=True)  # without the EOS token
        texts = [row[self.prompt_key] for row in rows]
        scores = score_completions(self.function, texts, completions, reward_columns(rows, self.prompt_key),
                                   completion_ids=ids, timeout=self.timeout)
        scores = torch.tensor(scores, dtype=torch.float64)  # NaN where the function returned None
        self._check(scores, beyond_float32(scores), prompts, n)
        return scores.float()

    def _check(self, scores: torch.Tensor, bad: torch.Tensor, prompts: list[Prompt], n: int) -> None:
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            text = str(prompts[i // n].row[self.prompt_key])[:80]
            raise RewardError(f"{self.name} returned {float(scores[i]):.3g} for sample {i} (prompt {text!r}): "
                              f"not a finite float32 (+-{FLOAT32_MAX:.3g}); rescale the reward")

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


def check_skipped(raw_rewards: torch.Tensor, max_fraction: float, source: str, step: int) -> None:
    """reward.max_skipped_fraction: an error when the reward skipped (NaN) more than that fraction of the
    step's samples, and always when it skipped every one (the step would train on nothing)."""
    skipped, total = int((~torch.isfinite(raw_rewards)).sum()), raw_rewards.numel()
    if skipped == total:
        raise RewardError(f"{source} returned None (skip) for all {total} samples of step {step}: there is "
                          "nothing to learn from")
    if skipped > max_fraction * total:
        raise RewardError(f"{source} returned None (skip) for {skipped} of {total} samples of step {step}, more "
                          f"than reward.max_skipped_fraction = {max_fraction:g} of them")
