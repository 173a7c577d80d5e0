"""Prompt rendering: the one place a prompt becomes the text and token ids a model is given.

RL rollouts (``tokenize_prompts``), SFT and reward-model pairs (``encode_pair``) all render here, so a policy
fine-tuned by SFT is asked its RL prompts exactly as it was taught. A prompt is a string or, in TRL's
conversational format, a list of messages (:mod:`.conversation`); a conversation needs the tokenizer's chat
template, rendered as TRL renders it (``trl.data_utils.apply_chat_template``): the generation prompt after a
user or tool turn, the last message continued when it is an assistant turn.
"""

from __future__ import annotations

from typing import Any

from .conversation import Messages, completion_messages, is_conversation
from .errors import DataError


def uses_chat_template(tokenizer: Any, chat_template: bool) -> bool:
    """data.apply_chat_template is on and the tokenizer has a template to apply."""
    return bool(chat_template and getattr(tokenizer, "chat_template", None))


def user_turn(prompt: str) -> list[dict[str, str]]:
    """The conversation of a prompt: one user message."""
    return [{"role": "user", "content": prompt}]


def as_messages(prompt: str | Messages) -> Messages:
    """A prompt as a conversation: a plain prompt becomes one user turn."""
    return prompt if is_conversation(prompt) else user_turn(prompt)


def check_renderable(tokenizer: Any, prompt: Any, chat_template: bool) -> None:
    """A conversation can only be rendered by a chat template: one line saying why it cannot be."""
    if not is_conversation(prompt) or uses_chat_template(tokenizer, chat_template):
        return
    if not chat_template:
        raise DataError("a conversational prompt (a list of messages) needs the chat template, but "
                        "data.apply_chat_template is false")
    raise DataError("a conversational prompt (a list of messages) needs a chat template, and the tokenizer has "
                    "none (give it one: tokenizer.chat_template, or use plain-string prompts)")


def render_prompt(tokenizer: Any, prompt: str | Messages, *, chat_template: bool) -> tuple[str, list[int]]:
    """(text, token ids) of ``prompt`` as the model is given it.

    With the chat template (:func:`uses_chat_template`): the conversation (a plain prompt as one user turn) plus
    the generation prompt (or, after an assistant turn, that turn left open), tokenized without the tokenizer's
    special tokens (the template writes its own). Otherwise the prompt as it is, with them (e.g. a BOS).
    """
    check_renderable(tokenizer, prompt, chat_template)
    if uses_chat_template(tokenizer, chat_template):
        messages = as_messages(prompt)
        open_turn = messages[-1]["role"] == "assistant"
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not open_turn,
                                             continue_final_message=open_turn)
        return text, list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return prompt, list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def render_response(tokenizer: Any, prompt: str | Messages, prompt_text: str, response: str | Messages, *,
                    chat_template: bool) -> str:
    """The text that follows ``prompt_text`` (``render_prompt``'s) when the model answers ``response`` (a
    string, or assistant messages): with the chat template, the rest of the rendered conversation (so the
    template's end-of-turn tokens are learned too); otherwise the response as it is."""
    check_renderable(tokenizer, response, chat_template)
    if not uses_chat_template(tokenizer, chat_template):
        return response
    reply = response if is_conversation(response) else completion_messages(response)
    full = tokenizer.apply_chat_template(as_messages(prompt) + reply, tokenize=False)
    if full.startswith(prompt_text):
        return full[len(prompt_text):]
    if isinstance(response, str):
        return response
    raise DataError("the chat template renders the prompt differently inside the whole conversation, so the "
                    "response cannot be cut from it")
