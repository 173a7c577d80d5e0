"""TRL's conversational data format: a value that is a list of ``{"role", "content"}`` messages.

Where the formats are TRL's (``trl.data_utils``):

* prompts: ``{"prompt": [{"role": "system" | "user" | "assistant" | "tool", "content": str}, ...]}``;
* SFT rows: ``{"messages": [...]}`` (the trailing assistant turn(s) are the response, the rest the prompt), or
  ``{"prompt": [...], "response": [{"role": "assistant", ...}]}``;
* preference pairs: ``{"chosen": [...], "rejected": [...]}`` with an implicit prompt (their longest common
  prefix of messages, as ``trl.extract_prompt``), or with an explicit ``"prompt"``.

A completion reaches a reward function as TRL passes it: ``[{"role": "assistant", "content": text}]`` for a
conversational prompt, the text for a plain one.
"""

from __future__ import annotations

from typing import Any

from .errors import DataError

ROLES = ("system", "user", "assistant", "tool")
MESSAGES_KEY = "messages"  # TRL's column of a whole conversation (SFT)

Messages = list[dict[str, str]]


def is_conversation(value: Any) -> bool:
    """A list whose first item is a mapping with a ``role`` (TRL's ``is_conversational`` test)."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def conversation_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as a list of messages; None when nothing is."""
    if not isinstance(value, list) or not value:
        return "expected a non-empty list of {role, content} messages"
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return f"message {i} is not a {{role, content}} mapping with string content"
        if message.get("role") not in ROLES:
            return f"message {i} has role {message.get('role')!r}; expected one of {', '.join(ROLES)}"
    return None


def prompt_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as a prompt (a non-blank string or a conversation ending in a user, tool
    or assistant turn); None when nothing is."""
    if isinstance(value, str):
        return "empty prompt" if not value.strip() else None
    if not isinstance(value, list):
        return "expected a string or a list of {role, content} messages"
    problem = conversation_problem(value)
    if problem is None and value[-1]["role"] == "system":
        problem = "the last message is a system turn; a prompt ends with a user, tool or assistant turn"
    return problem


def completion_messages(text: str) -> Messages:
    """A completion as TRL hands it to a reward function for a conversational prompt."""
    return [{"role": "assistant", "content": text}]


def as_completion(prompt: Any, text: str) -> str | Messages:
    """``text`` as TRL passes the completion of ``prompt``: messages for a conversation, else the text."""
    return completion_messages(text) if is_conversation(prompt) else text


def _checked(value: Any, where: str, key: str) -> Messages:
    if value is None:
        raise DataError(f"{where}: no {key!r} (a string, or a list of {{role, content}} messages)")
    problem = conversation_problem(value)
    if problem is not None:
        raise DataError(f"{where}: {key!r}: {problem}")
    return value


def split_messages(messages: Any, where: str) -> tuple[Messages, Messages]:
    """(prompt, response) of an SFT ``messages`` row: the response is the trailing assistant turn(s)."""
    messages = _checked(messages, where, MESSAGES_KEY)
    start = len(messages)
    while start and messages[start - 1]["role"] == "assistant":
        start -= 1
    if start == len(messages) or start == 0:
        raise DataError(f"{where}: {MESSAGES_KEY!r}: expected a conversation ending in assistant turn(s) after "
                        "a user turn (the response)")
    return messages[:start], messages[start:]


def sft_example(row: dict[str, Any], prompt_key: str, response_key: str, where: str) -> tuple[Any, Any]:
    """(prompt, response) of an SFT row: ``messages``, or ``prompt_key`` + ``response_key`` (each a string
    or messages)."""
    if prompt_key not in row and MESSAGES_KEY in row:
        return split_messages(row[MESSAGES_KEY], where)
    prompt, response = row.get(prompt_key), row.get(response_key)
    problem = prompt_problem(prompt)
    if problem is not None:
        raise DataError(f"{where}: {prompt_key!r}: {problem} (or give the whole conversation as {MESSAGES_KEY!r})")
    if not isinstance(response, str):
        response = _checked(response, where, response_key)
    return prompt, response


def common_prefix(a: list, b: list) -> int:
    """The number of leading items ``a`` and ``b`` share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def preference_example(row: dict[str, Any], prompt_key: str, chosen_key: str, rejected_key: str,
                       where: str) -> tuple[Any, Any, Any]:
    """(prompt, chosen, rejected) of a preference row: an explicit ``prompt_key``, or (conversations) the
    longest common prefix of chosen and rejected, as ``trl.extract_prompt``."""
    chosen, rejected = row.get(chosen_key), row.get(rejected_key)
    for key, value in ((chosen_key, chosen), (rejected_key, rejected)):
        if not isinstance(value, str):
            _checked(value, where, key)
    if prompt_key in row:
        problem = prompt_problem(row[prompt_key])
        if problem is not None:
            raise DataError(f"{where}: {prompt_key!r}: {problem}")
        return row[prompt_key], chosen, rejected
    if not (is_conversation(chosen) and is_conversation(rejected)):
        raise DataError(f"{where}: no {prompt_key!r}; give one, or {chosen_key!r} and {rejected_key!r} as "
                        "conversations that share the prompt turns")
    n = common_prefix(chosen, rejected)
    if n == 0 or n == len(chosen) or n == len(rejected):
        raise DataError(f"{where}: {chosen_key!r} and {rejected_key!r} share no prompt turns followed by a "
                        "response each")
    return chosen[:n], chosen[n:], rejected[n:]
