"""DAPO dynamic sampling (algo.filter_groups): a step's batch made of prompt groups whose rewards differ.

Every rank decides from the gathered rewards of every rank's rows, so the kept groups, the rounds and the
prompts consumed are the same for any number of ranks; the prompt stream advances by rollout.batch_size
prompts a round, so a resumed run consumes exactly what an uninterrupted one did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from reinforcepp.algos import informative_groups
from reinforcepp.config import Config

from .experience import Experience, concat_rows
from .scoring import RoundRewards

log = logging.getLogger(__name__)


@dataclass
class Samples:
    """One rollout round's samples, every rank's rows: P prompts, n samples each (contiguous), B = P * n."""

    prompt_indices: list[int]  # [P] indices into the training prompts
    exp: Experience  # [B, ...]
    rewards: RoundRewards  # [B]: R before the reward transform, skips marked
    finished: torch.Tensor  # [B] bool: ended by EOS / a stop string


def fill_with_informative_groups(first: Samples, next_round: Callable[[int], Samples], cfg: Config,
                                 step: int) -> tuple[Samples, dict[str, float]]:
    """Rounds of rollout.batch_size prompts (``next_round(k)`` rolls out round k, 0-based) until
    rollout.batch_size groups with differing rewards are found or algo.filter_max_rounds rounds ran (verl's
    DAPO recipe: rounds counted from the first, surplus groups discarded). Groups are kept in generation
    order; a batch still short after the last round is filled with the first dropped groups (so the step
    keeps its size: equal shares for the ranks, the planned number of optimizer steps), logged.

    Decided on ``rewards.filled``: the R that the advantages see (after any length penalty), as verl's
    ``metric: reward``. Returns the step's samples and the filter/ metrics.
    """
    n, wanted = cfg.rollout.n_samples_per_prompt, cfg.rollout.batch_size
    rounds = [first]
    keeps = [informative_groups(first.rewards.filled, n)]
    while sum(int(k.sum()) for k in keeps) < wanted and len(rounds) < cfg.algo.filter_max_rounds:
        rounds.append(next_round(len(rounds)))
        keeps.append(informative_groups(rounds[-1].rewards.filled, n))
    kept = [(r, g) for r, keep in enumerate(keeps) for g in keep.nonzero().flatten().tolist()]
    dropped = [(r, g) for r, keep in enumerate(keeps) for g in (~keep).nonzero().flatten().tolist()]
    filled = max(wanted - len(kept), 0)
    if filled:
        log.warning("step %d: algo.filter_groups found %d groups with differing rewards in %d rounds "
                    "(algo.filter_max_rounds); %d groups with equal rewards fill the batch", step, len(kept),
                    len(rounds), filled)
    samples = _select_groups(rounds, (kept + dropped)[:wanted], n)
    generated = len(kept) + len(dropped)
    metrics = {"filter/rounds": float(len(rounds)), "filter/dropped_groups": float(len(dropped)),
               "filter/kept_fraction": len(kept) / generated, "filter/filled_groups": float(filled)}
    return samples, metrics


def _select_groups(rounds: list[Samples], chosen: list[tuple[int, int]], n: int) -> Samples:
    """The samples of the groups ``chosen`` ((round, group) pairs): round by round, each in chosen's order."""
    def rows(groups: list[int]) -> torch.Tensor:
        return (torch.tensor(groups, dtype=torch.long)[:, None] * n + torch.arange(n)).flatten()

    per_round = [(r, [g for rr, g in chosen if rr == r]) for r in range(len(rounds))]
    per_round = [(r, groups) for r, groups in per_round if groups]
    return Samples(
        prompt_indices=[rounds[r].prompt_indices[g] for r, groups in per_round for g in groups],
        exp=concat_rows([(rounds[r].exp, rows(groups)) for r, groups in per_round]),
        rewards=RoundRewards.cat([rounds[r].rewards.rows(rows(groups)) for r, groups in per_round]),
        finished=torch.cat([rounds[r].finished[rows(groups)] for r, groups in per_round]),
    )
