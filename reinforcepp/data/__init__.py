"""Prompt data loading and ordering."""

from .prompts import DataError, Prompt, PromptSampler, read_jsonl, read_rows, tokenize_prompts

__all__ = ["DataError", "Prompt", "PromptSampler", "read_jsonl", "read_rows", "tokenize_prompts"]
