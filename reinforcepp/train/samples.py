"""Sample completions of a training step: what the model writes, and what the reward and the advantage made
of it. Every ``log.samples_every`` steps the first ``log.samples_count`` prompts of the batch, each with all
its completions, go to the metrics log (samples.jsonl, TensorBoard's text tab, the trackers, the report)."""

from __future__ import annotations

import math

import torch

from reinforcepp.data import Prompt
from reinforcepp.rollout import Rollout

from . import dist
from .experience import Experience
from .scoring import response_token_ids

COLUMNS = ("step", "prompt_index", "sample", "prompt", "completion", "reward", "advantage", "length", "finished")


def log_samples(run, step: int, prompt_indices: list[int], exp: Experience, raw_rewards: torch.Tensor,
                finished: torch.Tensor, lengths: torch.Tensor) -> None:
    """The step's sample table to the run's metrics log, every log.samples_every steps and at the last step."""
    cfg = run.cfg
    every = cfg.log.samples_every
    if every and (step % every == 0 or step == cfg.train.num_steps) and dist.is_main():
        prompts = [run.prompts[i] for i in prompt_indices[: cfg.log.samples_count]]
        run.metrics.log_samples(step, sample_rows(step, run.tokenizer, prompt_indices, prompts, exp, raw_rewards,
                                                  finished, lengths, cfg.rollout.n_samples_per_prompt))


def sample_rows(step: int, tokenizer, prompt_indices: list[int], prompts: list[Prompt], exp: Experience,
                raw_rewards: torch.Tensor, finished: torch.Tensor, lengths: torch.Tensor, n: int) -> list[dict]:
    """One row per completion of ``prompts``, the first prompts of the step's global batch (``exp``, rows in
    groups of ``n``; ``lengths`` [B]: each response's tokens, EOS included, before any row left the loss).

    reward: the raw reward (None where the reward function skipped the sample); advantage: the mean of the
    completion's token advantages (None for a sample that left the update)."""
    rows = len(prompts) * n
    lengths = lengths[:rows].long().tolist()
    # responses are right-padded: a response is its first `length` tokens; EOS is left out, as the reward sees it
    texts = tokenizer.batch_decode([exp.response_ids[row, : lengths[row]].tolist() for row in range(rows)],
                                   skip_special_tokens=True)
    mask = exp.response_mask[:rows].double()
    tokens = mask.sum(dim=1)
    mean_advantage = (exp.advantages[:rows].double() * mask).sum(dim=1) / tokens.clamp(min=1)
    out = []
    for row in range(rows):
        reward = float(raw_rewards[row])
        out.append({
            "step": step,
            "prompt_index": prompt_indices[row // n],
            "sample": row % n,
            "prompt": prompts[row // n].text,
            "completion": texts[row],
            "reward": reward if math.isfinite(reward) else None,
            "advantage": float(mean_advantage[row]) if tokens[row] > 0 else None,
            "length": lengths[row],
            "finished": bool(finished[row]),
        })
    return out


def completion_texts(tokenizer, rollout: Rollout, rows: int | None = None) -> list[str]:
    """The text of each response (of the first ``rows``) as the reward function gets it: EOS and padding left out."""
    return tokenizer.batch_decode(response_token_ids(rollout)[:rows], skip_special_tokens=True)


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (TensorBoard's text tab renders it): one line per completion."""
    from reinforcepp.report.html import markdown_table as table

    def cell(value: object) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("\n", "⏎")

    headers = ["prompt", "completion", "reward", "advantage", "length"]
    return table(headers, [[cell(row[h]) for h in headers] for row in rows])
