"""Rollout engines: the interface (:mod:`.base`) and the in-process torch sampler (:mod:`.torch_engine`)."""

from .base import Rollout, RolloutEngine, SamplingParams
from .streams import RowStreams
from .torch_engine import TorchEngine

__all__ = ["SamplingParams", "Rollout", "RolloutEngine", "RowStreams", "TorchEngine"]
