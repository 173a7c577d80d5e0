"""Shared-prefix forwards: each distinct prompt of a micro-batch runs through the model once.

With n samples per prompt the n rows of a group carry the same prompt, and an ordinary forward computes
its Lp positions n times over, with identical results (the backward then sums n identical gradients
through them). Here the distinct prompts run once, with the model's KV cache kept in the autograd graph;
each row's cache is its prompt's (an index_select, whose backward sums the group's gradients into the one
prompt computation), and the responses run against it. Attention of the responses still reads every row's
copy of the prompt's keys and values; what is saved is the prompt's projections, MLPs and norms, n - 1
times per group, in the forward and the backward.

Which rows share is decided per micro-batch: rows whose (left-padded) prompt ids and mask are equal. A
group split over micro-batches computes its prompt once in each micro-batch that holds some of its rows,
so the result never depends on how the rows were batched (beyond float rounding), nor on the ranks.

Same numbers as the unshared forward to float rounding (tests/train/test_shared_prefix.py, float64).
"""

from __future__ import annotations

import inspect

import torch

from .experience import Experience


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct prompts of a batch: (first [P], inverse [B]) with row ``first[p]`` the first row holding
    prompt p and ``inverse[b]`` the prompt of row b, so ``prompt_ids[first][inverse] == prompt_ids``.

    Rows are equal when their ids and mask are equal position by position (padding included: the layout of
    :class:`Experience`, left padded to the batch's width). Prompts are numbered in order of first appearance.

    Shapes: prompt_ids, prompt_mask [B, Lp] -> first [P] int64, inverse [B] int64, P <= B.
    """
    key = torch.cat([prompt_ids * prompt_mask, prompt_mask], dim=1)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)  # numbered in sorted order
    B = key.shape[0]
    # first row of each sorted-order prompt: the smallest row index with that number
    first_sorted = torch.full((int(inverse.max()) + 1,), B, dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(B), reduce="amin")
    order = torch.argsort(first_sorted)  # prompts by first appearance
    renumber = torch.empty_like(order)
    renumber[order] = torch.arange(len(order))
    return first_sorted[order], renumber[inverse]


def uses_checkpointing(body: torch.nn.Module) -> bool:
    """Whether activation checkpointing is on in ``body``'s layers now (:func:`forward.checkpointing`): HF then
    drops the KV cache inside a layer, so the shared forward cannot run."""
    return any(getattr(m, "gradient_checkpointing", False) and m.training for m in body.modules())


def shared_prefix_hidden(body: torch.nn.Module, exp: Experience, device: torch.device,
                         groups: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The final hidden states that predict each response token, each distinct prompt computed once.

        h_b,t = body([prompt_b | response_b])[Lp - 1 + t]      for t = 0 .. T - 1

    computed as: K, V, h of the P distinct prompts in one forward; row b's cache = its prompt's
    (``groups`` = :func:`prompt_groups`); then the [B, T] responses against those caches, with the mask and
    position ids of the whole rows. h_b,0 is the prompt's last position; h_b,t (t >= 1) the response's t - 1.

    ``body``: the decoder without its LM head (``LlamaForCausalLM.model``), taking a DynamicCache.
    Shapes: exp with [B, Lp] prompts and [B, T] responses (T >= 1) -> [B, T, H], differentiable in the weights.
    """
    first, inverse = (g.to(device) for g in groups)
    Lp = exp.prompt_ids.shape[1]
    inputs = exp.model_inputs(device)
    mask, positions = inputs["attention_mask"], inputs["position_ids"]
    prompt = body(input_ids=inputs["input_ids"][first, :Lp], attention_mask=mask[first, :Lp],
                  position_ids=positions[first, :Lp], use_cache=True)
    name = _cache_argument(body)
    cache = getattr(prompt, name)
    cache.reorder_cache(inverse)  # index_select: the backward sums each group's rows into its prompt
    response = body(input_ids=inputs["input_ids"][:, Lp:], attention_mask=mask, position_ids=positions[:, Lp:],
                    use_cache=True, **{name: cache}).last_hidden_state  # [B, T, H]
    last_prompt = prompt.last_hidden_state[:, -1].index_select(0, inverse)  # [B, H]
    return torch.cat([last_prompt.unsqueeze(1), response[:, :-1]], dim=1)



def _cache_argument(body: torch.nn.Module) -> str:
    """The name of the KV cache in the decoder's forward and output: ``cache`` from transformers 5.x (which
    deprecates ``past_key_values``), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"
