"""Evaluation on held-out prompts: pass@k, mean reward, response length, score per token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from reinforcepp.data import Prompt
from reinforcepp.rollout import Rollout, RolloutEngine, SamplingParams

from .passk import pass_at_k

# (prompts, rollout, n) -> rewards [len(prompts) * n]
ScoreFn = Callable[[list[Prompt], Rollout, int], torch.Tensor]
# rollout -> each response's text
DecodeFn = Callable[[Rollout], list[str]]


@dataclass
class EvalResult:
    mode: str  # "greedy" or "sampled"
    num_prompts: int
    samples_per_prompt: int
    reward_mean: float
    response_length: float
    score_per_token: float  # total reward / total response tokens (the paper's Table 1 efficiency view)
    pass_at: dict[int, float]  # k -> mean over prompts of the unbiased pass@k
    prompt_pass_rates: list[float] = field(default_factory=list, repr=False)  # per prompt: passed / n
    completions: list[dict] = field(default_factory=list, repr=False)  # per sample, when asked: text, reward

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        out = {
            f"{prefix}/{self.mode}/reward_mean": self.reward_mean,
            f"{prefix}/{self.mode}/response_length": self.response_length,
            f"{prefix}/{self.mode}/score_per_token": self.score_per_token,
        }
        out |= {f"{prefix}/{self.mode}/pass@{k}": v for k, v in self.pass_at.items()}
        return out

    def grouped_metrics(self, key: str, values: list[object], prefix: str = "eval") -> dict[str, float]:
        """pass@1 per value of a prompt column (``values[i]`` is prompt i's), e.g. K&K accuracy by
        number of people: ``{prefix}/{mode}/by_{key}/{value}/pass@1``."""
        if len(values) != len(self.prompt_pass_rates):
            raise ValueError(f"grouped_metrics: {len(values)} values for {len(self.prompt_pass_rates)} prompts")
        groups: dict[str, list[float]] = {}
        for value, rate in zip(values, self.prompt_pass_rates):
            groups.setdefault(str(value), []).append(rate)
        return {f"{prefix}/{self.mode}/by_{key}/{v}/pass@1": sum(r) / len(r) for v, r in groups.items()}


def evaluate_prompts(
    engine: RolloutEngine,
    score: ScoreFn,
    prompts: list[Prompt],
    params: SamplingParams,
    *,
    n: int = 1,
    ks: tuple[int, ...] = (1,),
    pass_threshold: float = 1.0,
    generator: torch.Generator | None = None,
    decode: DecodeFn | None = None,
) -> EvalResult:
    """Sample n responses per prompt (n = 1 and ``params.greedy`` for greedy), score them; a sample
    passes when its reward >= ``pass_threshold``. pass@k is averaged over prompts. With ``decode``, the result
    also holds every completion's text, reward and verdict."""
    rollout = engine.generate([p.token_ids for p in prompts], params, n, generator)
    rewards = score(prompts, rollout, n).double()  # [P * n]
    lengths = rollout.response_mask.sum(dim=1).double()
    passed = (rewards >= pass_threshold).view(len(prompts), n).sum(dim=1).tolist()
    completions = []
    if decode is not None:
        mode = "greedy" if params.greedy else "sampled"
        for i, (text, reward) in enumerate(zip(decode(rollout), rewards.tolist())):
            completions.append({"mode": mode, "prompt_index": i // n, "sample": i % n, "prompt": prompts[i // n].text,
                                "completion": text, "reward": reward if reward == reward else None,
                                "passed": reward >= pass_threshold, "length": int(lengths[i])})
    return EvalResult(
        mode="greedy" if params.greedy else "sampled",
        num_prompts=len(prompts),
        samples_per_prompt=n,
        reward_mean=rewards.mean().item(),
        response_length=lengths.mean().item(),
        score_per_token=rewards.sum().item() / max(lengths.sum().item(), 1.0),
        pass_at={k: sum(pass_at_k(n, int(c), k) for c in passed) / len(prompts) for k in ks if k <= n},
        prompt_pass_rates=[c / n for c in passed],
        completions=completions,
    )


def format_table(results: list[EvalResult]) -> str:
    """A Markdown table of evaluation results."""
    ks = sorted({k for r in results for k in r.pass_at})
    head = ["mode", "prompts", "n", "reward", "length", "score/token", *[f"pass@{k}" for k in ks]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.mode, str(r.num_prompts), str(r.samples_per_prompt), f"{r.reward_mean:.4f}",
                 f"{r.response_length:.1f}", f"{r.score_per_token:.5f}",
                 *[f"{r.pass_at[k]:.4f}" if k in r.pass_at else "" for k in ks]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
