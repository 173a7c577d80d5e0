"""Scoring: decode the responses and turn them into one scalar reward per sequence."""

from __future__ import annotations

from collections.abc import Callable

import torch

from reinforcepp.data import Prompt
from reinforcepp.rewards import score_completions
from reinforcepp.rollout import Rollout


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    """The text of each response, special tokens (EOS, padding) skipped."""
    ids = [row[mask.bool()].tolist() for row, mask in zip(rollout.response_ids, rollout.response_mask)]
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


class Scorer:
    """Raw rewards R [B] for a rollout of ``n`` samples per prompt, from a reward function
    (called with the prompts, completions and every other column of the prompt rows) or a
    Bradley-Terry reward model (its score of prompt + response)."""

    def __init__(self, tokenizer, *, function: Callable | None = None, reward_model=None, prompt_key: str = "prompt"):
        self.tokenizer, self.function, self.reward_model, self.prompt_key = tokenizer, function, reward_model, prompt_key

    def __call__(self, prompts: list[Prompt], rollout: Rollout, n: int) -> torch.Tensor:
        rows = [p.row for p in prompts for _ in range(n)]
        if self.reward_model is not None:
            return self._model_scores(rollout)
        completions = decode_responses(self.tokenizer, rollout)
        texts = [row[self.prompt_key] for row in rows]
        columns = {k: [row.get(k) for row in rows] for k in rows[0] if k != self.prompt_key}
        return torch.tensor(score_completions(self.function, texts, completions, columns), dtype=torch.float32)

    @torch.no_grad()
    def _model_scores(self, rollout: Rollout) -> torch.Tensor:
        device = next(self.reward_model.parameters()).device
        input_ids = torch.cat([rollout.prompt_ids, rollout.response_ids], dim=1).to(device)
        attention_mask = torch.cat([rollout.prompt_mask, rollout.response_mask], dim=1).to(device)
        return self.reward_model.score(input_ids, attention_mask).float().cpu()
