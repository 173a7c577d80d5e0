"""Evaluation: pass@k (unbiased), mean reward, response length, score per token."""

from .evaluate import EvalResult, evaluate_prompts, format_table
from .passk import pass_at_k
from .suite import eval_metrics, run_eval_suite

__all__ = ["EvalResult", "evaluate_prompts", "format_table", "pass_at_k", "run_eval_suite", "eval_metrics"]
