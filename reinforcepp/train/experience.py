"""Experience: one rollout batch with everything the update needs, as [B, ...] tensors.

Layout: each row is the left-padded prompt followed by the right-padded response,
``input_ids = [prompt (Lp) | response (T)]``. The logits at position Lp - 1 + t predict response token t.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from reinforcepp.models.inputs import position_ids
from reinforcepp.rollout import Rollout

from . import dist


@dataclass
class Experience:
    """Shapes: B sequences, Lp prompt positions, T response positions."""

    prompt_ids: torch.Tensor  # [B, Lp] left padded
    prompt_mask: torch.Tensor  # [B, Lp]
    response_ids: torch.Tensor  # [B, T] right padded
    response_mask: torch.Tensor  # [B, T] 1 on response tokens: the loss mask
    old_logp: torch.Tensor | None = None  # [B, T] log pi_old, recomputed by the training forward
    rollout_logp: torch.Tensor | None = None  # [B, T] the sampler's log-probs (kept for algo.loss.tis_cap)
    ref_logp: torch.Tensor | None = None  # [B, T] log pi_ref (None without a KL term)
    values: torch.Tensor | None = None  # [B, T] critic values V_t (PPO only)
    advantages: torch.Tensor | None = None  # [B, T]
    returns: torch.Tensor | None = None  # [B, T] critic targets

    @classmethod
    def from_rollout(cls, rollout: Rollout) -> Experience:
        return cls(rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids, rollout.response_mask)

    def keep_rows(self, keep: torch.Tensor) -> None:
        """Rows where ``keep`` [B] is False leave the update: their loss mask, and so what was computed under it
        (the sampler's log-probs, as log pi_old or for the rollout correction), becomes 0."""
        self.response_mask = self.response_mask * keep[:, None].to(self.response_mask.dtype)
        if self.old_logp is not None:
            self.old_logp = self.old_logp * self.response_mask
        if self.rollout_logp is not None:
            self.rollout_logp = self.rollout_logp * self.response_mask

    def rows(self, index: torch.Tensor) -> Experience:
        """The sub-batch of rows ``index``, trimmed of columns that are padding in every row."""
        picked = {f.name: (None if (v := getattr(self, f.name)) is None else v[index]) for f in fields(self)}
        sub = Experience(**picked)
        keep_prompt = sub.prompt_mask.any(dim=0).nonzero()
        keep_response = sub.response_mask.any(dim=0).nonzero()
        p0 = int(keep_prompt[0]) if len(keep_prompt) else sub.prompt_mask.shape[1]
        # at least one response column: every micro-batch runs the same forwards (no rank skips one under FSDP)
        t1 = int(keep_response[-1]) + 1 if len(keep_response) else min(1, sub.response_mask.shape[1])
        trimmed = {}
        for f in fields(sub):
            v = getattr(sub, f.name)
            if v is not None:
                trimmed[f.name] = v[:, p0:] if f.name.startswith("prompt") else v[:, :t1]
        return replace(sub, **trimmed)

    def model_inputs(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask and position_ids of [prompt | response], on ``device``."""
        input_ids = torch.cat([self.prompt_ids, self.response_ids], dim=1)
        attention_mask = torch.cat([self.prompt_mask, self.response_mask], dim=1)
        return {
            "input_ids": input_ids.to(device),
            "attention_mask": attention_mask.to(device),
            "position_ids": position_ids(attention_mask).to(device),
        }


def _padded(exp: Experience, prompt_width: int, response_width: int) -> dict[str, torch.Tensor]:
    """exp's tensors, prompts left-padded and responses right-padded to the widths (None fields left out)."""
    out = {}
    for f in fields(exp):
        value = getattr(exp, f.name)
        if value is None:
            continue
        if f.name.startswith("prompt"):
            out[f.name] = F.pad(value, (prompt_width - value.shape[1], 0))  # left: the prompt ends where the response starts
        else:
            out[f.name] = F.pad(value, (0, response_width - value.shape[1]))
    return out


def gather_experience(exp: Experience) -> Experience:
    """Every rank's rows, in rank order (ranks hold consecutive blocks of the global batch), on every rank:
    prompts left-padded and responses right-padded to the widest rank's widths. Without torchrun: ``exp``."""
    if dist.world_size() == 1:
        return exp
    prompt_width, response_width = dist.global_max(torch.tensor([exp.prompt_ids.shape[1], exp.response_ids.shape[1]])).tolist()
    return Experience(**{name: dist.gather_rows(value) for name, value in _padded(exp, prompt_width, response_width).items()})


def concat_rows(parts: list[tuple[Experience, torch.Tensor]]) -> Experience:
    """The rows ``index`` of each experience, in order, as one experience padded to the widest part."""
    prompt_width = max(exp.prompt_ids.shape[1] for exp, _ in parts)
    response_width = max(exp.response_ids.shape[1] for exp, _ in parts)
    padded = [_padded(exp, prompt_width, response_width) for exp, _ in parts]
    return Experience(**{name: torch.cat([p[name][index] for p, (_, index) in zip(padded, parts)])
                         for name in padded[0]})
