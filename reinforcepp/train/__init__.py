"""The RL engine: experience, updates, the loop, checkpoints."""

from .loop import train

__all__ = ["train"]
