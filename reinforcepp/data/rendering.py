"""Prompt rendering: the one place a prompt becomes the text and token ids a model is given.

RL rollouts (``tokenize_prompts``) and SFT (``encode_pair``) both render here, so a policy fine-tuned by SFT is
asked its RL prompts exactly as it was taught.
"""

from __future__ import annotations

from typing import Any


def uses_chat_template(tokenizer: Any, chat_template: bool) -> bool:
    """data.apply_chat_template is on and the tokenizer has a template to apply."""
    return bool(chat_template and getattr(tokenizer, "chat_template", None))


def user_turn(prompt: str) -> list[dict[str, str]]:
    """The conversation of a prompt: one user message."""
    return [{"role": "user", "content": prompt}]


def render_prompt(tokenizer: Any, prompt: str, *, chat_template: bool) -> tuple[str, list[int]]:
    """(text, token ids) of ``prompt`` as the model is given it.

    With the chat template (:func:`uses_chat_template`): the user turn plus the generation prompt, tokenized
    without the tokenizer's special tokens (the template writes its own). Otherwise the prompt as it is, with
    them (e.g. a BOS).
    """
    if uses_chat_template(tokenizer, chat_template):
        text = tokenizer.apply_chat_template(user_turn(prompt), tokenize=False, add_generation_prompt=True)
        return text, list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return prompt, list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
