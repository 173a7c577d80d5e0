"""The sampler's memory budget: which prompts to roll out together so that the KV cache stays bounded.

The engine preallocates the cache for every row at full length (prompt + max_new_tokens), so its size is
rows x (longest prompt of the batch + max_new_tokens) token slots times the per-token size of the model's
keys and values. :func:`prompt_chunks` cuts the prompts into consecutive groups that each fit a budget of
token slots; a prompt's n samples always stay together (their prefill is shared).
"""

from __future__ import annotations


def cache_slots(rows: int, longest_prompt: int, max_new_tokens: int) -> int:
    """KV-cache token slots of ``rows`` sequences whose longest prompt has ``longest_prompt`` tokens."""
    return rows * (longest_prompt + max_new_tokens)


def prompt_chunks(
    prompt_lengths: list[int], n: int, max_new_tokens: int, max_batch_tokens: int | None
) -> list[tuple[int, int]]:
    """Consecutive [start, end) prompt ranges covering all prompts, each as long as its cache (n rows per
    prompt) fits ``max_batch_tokens`` slots but never empty: a prompt whose n samples alone exceed the
    budget is a chunk of its own. None: one chunk."""
    if max_batch_tokens is None:
        return [(0, len(prompt_lengths))]
    chunks, start, longest = [], 0, 0
    for i, length in enumerate(prompt_lengths):
        longest = max(longest, length)
        if i > start and cache_slots((i + 1 - start) * n, longest, max_new_tokens) > max_batch_tokens:
            chunks.append((start, i))
            start, longest = i, length
    chunks.append((start, len(prompt_lengths)))
    return chunks
