"""The main job: a complete REINFORCE++ run that visibly learns, on a laptop CPU, in minutes: on a tiny model
trained in the run (``--model tiny``) or on SmolLM2-135M-Instruct (``--model smollm2``)."""

from .pipeline import DEMO_CONFIG, run_demo
from .smollm2 import SMOLLM2_CONFIG, run_smollm2_demo

__all__ = ["DEMO_CONFIG", "SMOLLM2_CONFIG", "run_demo", "run_smollm2_demo"]
