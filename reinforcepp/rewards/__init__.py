"""Reward sources and reward post-processing.

Reward functions here are plain Python; ``RewardTransform`` (torch) is imported only when used, so a
reward worker process does not pay for torch.
"""

from .function import RewardError, RewardSignatureError, load_reward_function, score_completions

__all__ = ["RewardError", "RewardSignatureError", "RewardTransform", "load_reward_function", "score_completions"]


def __getattr__(name: str):
    if name == "RewardTransform":
        from .transform import RewardTransform

        return RewardTransform
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
