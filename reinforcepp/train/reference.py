"""The KL reference pi_ref: a frozen model of its own, or the LoRA policy with its adapters off."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from reinforcepp.config import Config
from reinforcepp.models import lora


@dataclass(frozen=True)
class Reference:
    """``model`` computes pi_ref inside :meth:`computing`. ``adapters_off``: ``model`` is the policy itself (a
    PeftModel), whose frozen base weights are the reference: no second copy, and since the adapters start at
    B = 0, log pi_ref equals log pi_old exactly until the first update."""

    model: torch.nn.Module
    adapters_off: bool = False

    def computing(self) -> contextlib.AbstractContextManager:
        return lora.adapters_off(self.model) if self.adapters_off else contextlib.nullcontext()

    @property
    def own_model(self) -> torch.nn.Module | None:
        """The reference's own weights (to shard, to free), None when it is the policy's."""
        return None if self.adapters_off else self.model


def copies_policy(cfg: Config, policy_dtype: str) -> bool:
    """pi_ref is a model of its own loaded from the policy's path in the policy's dtype (``policy_dtype``): a copy
    of the policy as loaded (before any update or LoRA adapter) is the same weights, without a second load or
    dequantization. (A bfloat16 reference of a float32 policy is loaded in bfloat16: a copy would need both.)"""
    m = cfg.model
    own_model = cfg.algo.kl.coef > 0 and not (m.lora is not None and m.reference is None)
    return own_model and m.reference in (None, m.policy) and m.reference_dtype in ("auto", policy_dtype)


def build_reference(cfg: Config, policy: torch.nn.Module, load: Callable[[], torch.nn.Module]) -> Reference | None:
    """The one place that decides what pi_ref is: none without a KL term; with LoRA and no model.reference,
    the policy with its adapters off; else the frozen model ``load()`` returns (model.reference, or the
    policy's starting weights)."""
    if cfg.algo.kl.applied_to is None:
        return None
    if cfg.model.lora is not None and cfg.model.reference is None:
        return Reference(policy, adapters_off=True)
    return Reference(load())
