"""The evaluation a config asks for: greedy, and sampled with pass@k; shared by the RL loop and
`reinforcepp eval`."""

from __future__ import annotations

import torch

from reinforcepp.config import Config
from reinforcepp.data import Prompt
from reinforcepp.rollout import RolloutEngine, SamplingParams

from .evaluate import DecodeFn, EvalResult, ScoreFn, evaluate_prompts


def run_eval_suite(cfg: Config, engine: RolloutEngine, score: ScoreFn, prompts: list[Prompt], *,
                   decode: DecodeFn | None = None) -> list[EvalResult]:
    """Greedy and/or sampled evaluation of ``prompts``, as ``cfg.eval`` asks (with ``decode``: and the
    completions, see :func:`.evaluate.evaluate_prompts`)."""
    ev, rollout = cfg.eval, cfg.rollout
    common = dict(max_new_tokens=rollout.max_new_tokens, stop_strings=tuple(rollout.stop_strings))
    results = []
    if ev.greedy:
        results.append(evaluate_prompts(engine, score, prompts, SamplingParams(greedy=True, **common),
                                        pass_threshold=ev.pass_threshold, decode=decode))
    if ev.samples_per_prompt:
        params = SamplingParams(temperature=ev.temperature, top_p=rollout.top_p, top_k=rollout.top_k, **common)
        generator = torch.Generator().manual_seed(cfg.seed)  # the same samples for every checkpoint's eval
        results.append(evaluate_prompts(engine, score, prompts, params, n=ev.samples_per_prompt,
                                        ks=tuple(ev.ks), pass_threshold=ev.pass_threshold, generator=generator,
                                        decode=decode))
    return results


def eval_metrics(cfg: Config, results: list[EvalResult], prompts: list[Prompt], prefix: str = "eval") -> dict[str, float]:
    """The flat metrics of a suite's results, with pass@1 by ``eval.group_key`` when it is set."""
    out: dict[str, float] = {}
    key = cfg.eval.group_key
    for result in results:
        out |= result.metrics(prefix)
        if key is not None:
            out |= result.grouped_metrics(key, [p.row.get(key) for p in prompts], prefix)
    return out
