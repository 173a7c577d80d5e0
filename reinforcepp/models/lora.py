"""LoRA adapters on the policy, through peft (an optional dependency, imported only here, when used).

``add_lora`` wraps a loaded causal LM in a ``PeftModel``: the base weights are frozen in place and every
targeted linear layer gains ``(alpha / rank) * B @ A``, with B = 0 at the start, so the wrapped model computes
exactly what the base computes until the first update. The base model with the adapters switched off
(``adapters_off``) is the KL reference: no second copy of the weights.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from typing import TYPE_CHECKING

import torch

from reinforcepp.config import ConfigError

if TYPE_CHECKING:
    from reinforcepp.config.schema import LoRAConfig


def require_peft():
    """The peft module, or a one-line ConfigError saying how to install it."""
    try:
        import peft
    except ImportError:
        raise ConfigError(
            "model.lora: LoRA needs the peft package, which is not installed: pip install 'reinforcepp[lora]' "
            "(or pip install peft)"
        ) from None
    return peft


def add_lora(model: torch.nn.Module, cfg: LoRAConfig) -> torch.nn.Module:
    """``model`` (a causal LM) with LoRA adapters: only their parameters require gradients."""
    peft = require_peft()
    config = peft.LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules,
        bias="none", task_type="CAUSAL_LM",
    )
    try:
        wrapped = peft.get_peft_model(model, config)
    except ValueError as exc:  # e.g. a target module that the model does not have
        raise ConfigError(f"model.lora.target_modules: {cfg.target_modules!r}: {exc}") from None
    return wrapped.eval()


def is_lora_model(model: torch.nn.Module | None) -> bool:
    """Whether ``model`` is a PeftModel (peft is imported by then: nothing else makes one)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def base_causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a PeftModel (its targeted layers carry the adapters, so its forward is the
    PeftModel's); any other model as it is."""
    return model.get_base_model() if is_lora_model(model) else model


def adapters_off(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """Inside, a PeftModel computes its frozen base model (the layers skip their adapters); peft switches
    the adapters' requires_grad off inside and back on after."""
    return model.disable_adapter()


def merged_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A plain transformers model with the adapters merged into the base weights (W + (alpha / rank) B @ A),
    for an export that loads without peft; ``model`` keeps its adapters."""
    return copy.deepcopy(model).merge_and_unload()
