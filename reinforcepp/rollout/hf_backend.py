"""The sampler's generic path: any HF causal LM through its own forward, with a KV cache whose
full-attention layers are preallocated to the final length (no torch.cat growth per step)."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

from reinforcepp.models.inputs import position_ids


@functools.cache
def _prealloc_layer_class():
    """``PreallocatedLayer`` (built lazily: transformers is imported only when the generic path runs)."""
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """A full-attention cache layer whose keys/values live in a buffer sized for the whole generation.

        ``update`` writes the new states in place and returns views of the filled part (no ``torch.cat``).
        The first update (the prefill, on the distinct prompts) is broadcast to ``repeats`` rows each.
        """

        def __init__(self, capacity: int, repeats: int = 1):
            super().__init__()
            self.capacity = capacity
            self.repeats = repeats
            self.length = 0
            self.k_buf = self.v_buf = None

        def _views(self) -> None:
            self.keys = self.k_buf[:, :, : self.length]
            self.values = self.v_buf[:, :, : self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            if self.k_buf is None:
                P, Hkv, S, D = key_states.shape
                r = self.repeats
                self.k_buf = key_states.new_empty(P * r, Hkv, self.capacity, D)
                self.v_buf = value_states.new_empty(P * r, value_states.shape[1], self.capacity, value_states.shape[-1])
                self.k_buf.view(P, r, *self.k_buf.shape[1:])[:, :, :, :S].copy_(key_states.unsqueeze(1))
                self.v_buf.view(P, r, *self.v_buf.shape[1:])[:, :, :, :S].copy_(value_states.unsqueeze(1))
                self.length = S
                self._views()
                return key_states, value_states
            S = key_states.shape[-2]
            end = self.length + S
            if end > self.capacity:  # should not happen; grow rather than fail
                grow = max(end, 2 * self.capacity) - self.capacity
                self.k_buf = torch.cat([self.k_buf, self.k_buf.new_empty(*self.k_buf.shape[:2], grow, self.k_buf.shape[3])], 2)
                self.v_buf = torch.cat([self.v_buf, self.v_buf.new_empty(*self.v_buf.shape[:2], grow, self.v_buf.shape[3])], 2)
                self.capacity += grow
            self.k_buf[:, :, self.length : end].copy_(key_states)
            self.v_buf[:, :, self.length : end].copy_(value_states)
            self.length = end
            self._views()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def reset(self) -> None:
            self.k_buf = self.v_buf = None
            self.length = 0
            super().reset()

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove < 0 and self.k_buf is not None:
                self.length = max(0, self.length + tokens_to_remove)
                self._views()

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.k_buf is not None:
                self.k_buf = self.k_buf.repeat_interleave(repeats, dim=0)
                self.v_buf = self.v_buf.repeat_interleave(repeats, dim=0)
                self._views()

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.k_buf is not None:
                self.k_buf = self.k_buf.index_select(0, indices)
                self.v_buf = self.v_buf.index_select(0, indices)
                self._views()

    return PreallocatedLayer


class _HFBackend:
    """Any HF causal LM, through its forward with a KV cache."""

    def __init__(self, model: Any):
        self.model = model
        params = inspect.signature(model.forward).parameters
        self.takes_logits_to_keep = "logits_to_keep" in params
        self.takes_position_ids = "position_ids" in params
        self.device = next(model.parameters()).device

    def _make_cache(self, capacity: int, repeats: int):
        """A DynamicCache whose plain full-attention layers are replaced by preallocated ones; (cache, broadcasts)."""
        from transformers.cache_utils import DynamicCache, DynamicLayer

        try:
            cache = DynamicCache(config=self.model.config)
        except Exception:  # noqa: BLE001 - configs that DynamicCache cannot read
            return DynamicCache(), False
        if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
            return cache, False  # sliding-window / hybrid / lazily built caches: keep HF's own
        layer_class = _prealloc_layer_class()
        cache.layers = [layer_class(capacity, repeats) for _ in cache.layers]
        return cache, True

    def _forward(self, ids, mask, positions):
        kwargs: dict[str, Any] = dict(input_ids=ids, attention_mask=mask, past_key_values=self.cache, use_cache=True)
        if self.takes_position_ids:
            kwargs["position_ids"] = positions
        if self.takes_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        out = self.model(**kwargs)
        if getattr(out, "past_key_values", None) is not None:
            self.cache = out.past_key_values
        return out.logits[:, -1].float()

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, capacity: int, repeats: int) -> torch.Tensor:
        P, Lp = ids.shape
        self.cache, broadcasts = self._make_cache(capacity, repeats)
        logits = self._forward(ids, mask, position_ids(mask))
        if repeats > 1 and not broadcasts:
            self.cache.batch_repeat_interleave(repeats)
        B = P * repeats
        self.mask = torch.ones(B, capacity, dtype=torch.long, device=self.device)
        self.mask[:, :Lp] = mask.repeat_interleave(repeats, 0)
        self.length = Lp
        self.positions = mask.sum(-1).repeat_interleave(repeats)
        return logits

    def select(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.mask = self.mask.index_select(0, rows)
        self.positions = self.positions.index_select(0, rows)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self.length += 1
        logits = self._forward(tokens.unsqueeze(1), self.mask[:, : self.length], self.positions.unsqueeze(1))
        self.positions = self.positions + 1
        return logits
