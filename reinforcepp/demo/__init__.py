"""The main job: a complete REINFORCE++ run that visibly learns, on a laptop CPU, in minutes."""

from .pipeline import DEMO_CONFIG, run_demo

__all__ = ["DEMO_CONFIG", "run_demo"]
