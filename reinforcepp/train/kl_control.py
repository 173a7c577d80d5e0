"""The KL coefficient of a run: fixed, or adapted after each step (algo.kl.target); saved in checkpoints."""

from __future__ import annotations

from reinforcepp.algos import adaptive_kl_coef
from reinforcepp.config import Config


class KLController:
    """beta for this step's reward or loss (``coef``), and its update from the step's KL (:meth:`observe`).
    Stateful (state_dict / load_state_dict), so a resumed run continues from the saved beta, which neither
    OpenRLHF nor verl does (verl #2653)."""

    def __init__(self, cfg: Config) -> None:
        kl = cfg.algo.kl
        self.coef = kl.coef
        self.target, self.horizon = kl.target, kl.horizon
        self.samples_per_step = cfg.rollout.batch_size * cfg.rollout.n_samples_per_prompt

    @property
    def adaptive(self) -> bool:
        return self.target is not None

    def observe(self, kl: float) -> None:
        """After a step: beta from this step's KL (:func:`reinforcepp.algos.sequence_mean_kl`); fixed: no-op."""
        if self.adaptive:
            self.coef = adaptive_kl_coef(self.coef, kl, self.target, self.horizon, self.samples_per_step)

    def state_dict(self) -> dict[str, float]:
        return {"coef": self.coef}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.coef = float(state["coef"])
