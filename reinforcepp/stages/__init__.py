"""The stages before RL: supervised fine-tuning (`run_sft`) and Bradley-Terry reward modelling (`run_rm`)."""

from .rm import run_rm
from .sft import run_sft

__all__ = ["run_rm", "run_sft"]
