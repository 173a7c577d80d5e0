"""A run's sampling budget, in prompts and in samples: rollout.batch_size counts prompts per step, each drawing
rollout.n_samples_per_prompt samples, for train.num_steps steps. (train.batch_size counts samples per optimizer
step: it splits a step's samples, it does not add to them.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HEADERS = ["prompts/step", "samples/prompt", "samples/step", "steps", "prompts in all", "samples in all"]


@dataclass(frozen=True)
class Budget:
    prompts_per_step: int
    samples_per_prompt: int
    steps: int

    @property
    def samples_per_step(self) -> int:
        return self.prompts_per_step * self.samples_per_prompt

    @property
    def total_prompts(self) -> int:
        return self.prompts_per_step * self.steps

    @property
    def total_samples(self) -> int:
        return self.samples_per_step * self.steps

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Budget:
        """The budget of a full config as data (``cfg.model_dump()``, a run's config.yaml)."""
        return cls(int(data["rollout"]["batch_size"]), int(data["rollout"]["n_samples_per_prompt"]),
                   int(data["train"]["num_steps"]))

    def cells(self) -> list[str]:
        """One table row under :data:`HEADERS`."""
        return [str(v) for v in (self.prompts_per_step, self.samples_per_prompt, self.samples_per_step, self.steps,
                                 self.total_prompts, self.total_samples)]
