"""The reward pipeline: everything between the reward source and the R that ``compute_advantages`` sees.

One path, in this order, for the sampled responses and for ReMax's greedy responses alike
(:class:`RewardPipeline`):

    1. the source: the reward function (None -> NaN, a skip) or the reward model      :class:`Scorer`
    2. DAPO's soft overlong penalty, added to R before any baseline (as OpenRLHF)    :func:`length_penalty`
    3. the global batch: every rank's rows, in rank order
    4. skips: a sample the function skipped, and under ReMax every sample of a prompt whose greedy response
       it skipped (no baseline), leaves the update; counted, logged, and checked against
       reward.max_skipped_fraction                                                  :func:`check_skipped`
    5. running normalization statistics take in the step's scored raw rewards
    6. normalize / clip / scale, in float64                                          :class:`RewardTransform`

A non-finite reward never reaches the advantages: a NaN is a counted skip, anything else non-finite (or
beyond float32) is an error naming the sample.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from reinforcepp.algos.dtypes import FLOAT32_MAX, beyond_float32
from reinforcepp.config.schema import RewardConfig
from reinforcepp.data import Prompt, column_names
from reinforcepp.data.conversation import as_completion
from reinforcepp.rewards import RewardError, RewardTransform, score_completions
from reinforcepp.rewards.format_rewards import overlong_penalty
from reinforcepp.rewards.function import function_name
from reinforcepp.rollout import Rollout

from . import dist

log = logging.getLogger(__name__)


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
    rows; for a conversational prompt, as TRL: prompts as the message lists, completions as
    ``[{"role": "assistant", "content": text}]``) or a Bradley-Terry reward model (its score of prompt + response)."""

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
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)  # without the EOS token
        prompts_given = [row[self.prompt_key] for row in rows]  # a conversation stays its list of messages
        completions = [as_completion(p, text) for p, text in zip(prompts_given, texts)]  # as TRL passes them
        scores = score_completions(self.function, prompts_given, completions, reward_columns(rows, self.prompt_key),
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


def length_penalty(rollout: Rollout, reward: RewardConfig, max_new_tokens: int) -> torch.Tensor:
    """DAPO's soft overlong penalty of each response (``overlong_penalty``), [B] float32; 0 when
    reward.overlong_buffer is off."""
    if reward.overlong_buffer is None:
        return torch.zeros(rollout.num_sequences)
    lengths = rollout.response_lengths().tolist()
    penalty = overlong_penalty(lengths, max_new_tokens, reward.overlong_buffer, reward.overlong_factor)
    return torch.tensor(penalty, dtype=torch.float32)


def fill_skipped(rewards: torch.Tensor, n: int) -> torch.Tensor:
    """A skipped sample (NaN) gets the mean of the scored samples of its prompt, so the group-mean baselines
    of the others do not move (TRL's nanmean, made explicit); an all-skipped group gets 0. The sample
    itself leaves the update (its loss mask becomes 0: ``Experience.keep_rows``).

    Shapes: rewards [B] (groups of ``n`` contiguous) -> [B] without NaN.
    """
    if bool(torch.isfinite(rewards).all()):
        return rewards
    groups = rewards.view(-1, n)
    group_mean = torch.nanmean(groups, dim=1, keepdim=True).nan_to_num(0.0)
    return torch.where(torch.isfinite(groups), groups, group_mean).view(-1)


def check_skipped(raw_rewards: torch.Tensor, max_fraction: float, source: str, step: int,
                  kept: torch.Tensor | None = None) -> None:
    """reward.max_skipped_fraction: an error when more than that fraction of the step's samples leave the update
    for a skip, and always when every one does (the step would train on nothing). ``kept`` [B] bool: the samples
    that stay (default: the scored ones; ReMax also drops the samples of a prompt whose baseline was skipped)."""
    skipped, total = int((~torch.isfinite(raw_rewards)).sum()), raw_rewards.numel()
    left = skipped if kept is None else int((~kept).sum())
    what = f"returned None (skip) for {skipped} of {total} samples of step {step}"
    if left > skipped:
        what += f" and for greedy baselines, so {left} of {total} samples leave the update"
    if left == total:
        if left == skipped:
            what = f"returned None (skip) for all {total} samples of step {step}"
        raise RewardError(f"{source} {what}: there is nothing to learn from")
    if left > max_fraction * total:
        raise RewardError(f"{source} {what}, more than reward.max_skipped_fraction = {max_fraction:g} of them")


@dataclass
class RoundRewards:
    """Stages 1-4 of one rollout round, over the global batch (every rank's rows, in rank order), B samples in
    groups of n. DAPO's dynamic sampling (algo.filter_groups) selects whole groups of several rounds' before the
    step's rewards are finished (:meth:`RewardPipeline.finish`)."""

    raw: torch.Tensor  # [B] float32: the source's score plus the overlong penalty; NaN where skipped
    filled: torch.Tensor  # [B] float32: ``raw`` with skipped samples filled by their group's mean (fill_skipped)
    kept: torch.Tensor  # [B] bool: the samples that stay in the update
    greedy_raw: torch.Tensor | None = None  # [B] float32: ReMax, the raw R of each sample's greedy response

    def rows(self, index: torch.Tensor) -> RoundRewards:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return RoundRewards(**{name: None if value is None else value[index] for name, value in values.items()})

    @staticmethod
    def cat(parts: list[RoundRewards]) -> RoundRewards:
        columns = {f.name: [getattr(part, f.name) for part in parts] for f in fields(RoundRewards)}
        return RoundRewards(**{name: None if parts[0] is None else torch.cat(parts) for name, parts in columns.items()})


@dataclass
class StepRewards:
    """One step's rewards over the global batch (every rank's rows, in rank order). Shapes: B samples."""

    raw: torch.Tensor  # [B] float32: the source's score plus the overlong penalty; NaN where skipped (metrics)
    rewards: torch.Tensor  # [B] float64: R for compute_advantages; a row that left the update holds a finite stand-in
    greedy: torch.Tensor | None  # [B] float64: ReMax's baseline, R of the greedy response to each sample's prompt
    kept: torch.Tensor  # [B] bool: the samples that stay in the update
    skipped_baselines: int = 0  # ReMax: prompts whose greedy response the reward skipped

    def metrics(self) -> dict[str, float]:
        return {} if self.greedy is None else {"reward/skipped_baselines": float(self.skipped_baselines)}


class RewardPipeline:
    """The module docstring's six stages: ``pipeline(prompts, rollout, n, step, greedy=...)`` -> :class:`StepRewards`;
    in two calls where rounds are selected in between: :meth:`score_round` (stages 1-3, the skips marked), then
    :meth:`finish` on the step's batch (4: the check, 5, 6).

    ReMax (``greedy``: the greedy rollout of this rank's prompts, one response each) scores its baseline through
    stages 1-3 and 6 exactly as the samples (the same penalty and transform: R(greedy) is the same quantity as
    R(sample)); the running statistics (5) take in the samples only. A greedy response the function skips leaves
    its prompt without a baseline: that prompt's samples leave the update (a counted, logged skip), since an
    error would stop a run over one unscorable answer and any substitute baseline would be another estimator.
    """

    def __init__(self, scorer: Scorer, transform: RewardTransform, reward: RewardConfig, max_new_tokens: int):
        self.scorer, self.transform, self.reward, self.max_new_tokens = scorer, transform, reward, max_new_tokens

    def raw(self, prompts: list[Prompt], rollout: Rollout, n: int) -> torch.Tensor:
        """Stages 1-3: [B] float32 of the global batch (this rank scores its own ``prompts``), NaN where skipped."""
        local = self.scorer(prompts, rollout, n) + length_penalty(rollout, self.reward, self.max_new_tokens)
        return dist.gather_rows(local)

    def score_round(self, prompts: list[Prompt], rollout: Rollout, n: int,
                    greedy: Rollout | None = None) -> RoundRewards:
        """Stages 1-3 of one round, and which samples a skip takes out of the update."""
        raw = self.raw(prompts, rollout, n)
        kept, greedy_raw = torch.isfinite(raw), None
        if greedy is not None:
            greedy_raw = self.raw(prompts, greedy, 1).repeat_interleave(n)
            kept = kept & torch.isfinite(greedy_raw)
        return RoundRewards(raw=raw, filled=fill_skipped(raw, n), kept=kept, greedy_raw=greedy_raw)

    def finish(self, scored: RoundRewards, n: int, step: int) -> StepRewards:
        """Stages 4 (the reward.max_skipped_fraction check), 5 and 6 on the step's batch."""
        raw, kept, greedy_raw = scored.raw, scored.kept, scored.greedy_raw
        skipped_baselines = 0 if greedy_raw is None else int((~torch.isfinite(greedy_raw)).sum()) // n
        check_skipped(raw, self.reward.max_skipped_fraction, self.scorer.name, step, kept)
        if skipped_baselines and dist.is_main():
            log.warning("step %d: %s returned None (skip) for the greedy response of %d prompt(s): without ReMax's "
                        "baseline their samples leave the update", step, self.scorer.name, skipped_baselines)
        self.transform.observe(raw[torch.isfinite(raw)])
        rewards = self.transform(scored.filled.double())
        baseline = None
        if greedy_raw is not None:  # a prompt without a baseline: its own R stands in (advantage 0, masked anyway)
            baseline = self.transform(torch.where(torch.isfinite(greedy_raw), greedy_raw, scored.filled).double())
        return StepRewards(raw=raw, rewards=rewards, greedy=baseline, kept=kept, skipped_baselines=skipped_baselines)

    def __call__(self, prompts: list[Prompt], rollout: Rollout, n: int, step: int,
                 greedy: Rollout | None = None) -> StepRewards:
        return self.finish(self.score_round(prompts, rollout, n, greedy), n, step)
