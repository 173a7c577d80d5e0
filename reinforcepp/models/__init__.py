"""Model roles: the policy and reference (causal LMs), the critic and reward model (a value head)."""

from .device import resolve_device
from .loading import ModelLoadError, frozen_copy, in_dtype, load_causal_lm, load_reference, load_tokenizer
from .value_model import ValueModel

__all__ = ["ModelLoadError", "ValueModel", "frozen_copy", "in_dtype", "load_causal_lm", "load_reference", "load_tokenizer", "resolve_device"]
