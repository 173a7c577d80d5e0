"""Reward sources and reward post-processing."""

from .function import RewardError, load_reward_function, score_completions
from .transform import RewardTransform

__all__ = ["RewardError", "RewardTransform", "load_reward_function", "score_completions"]
