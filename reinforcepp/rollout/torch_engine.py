"""A batched sampler with a preallocated KV cache for HF causal LMs, faster than ``model.generate``.

``TorchEngine(model, tokenizer).generate(prompts, params, n)`` repeats each prompt ``n`` times
(contiguously), left pads, prefills every distinct prompt once and broadcasts its KV cache to its ``n`` rows,
then decodes one token per step for the whole batch.

Two backends run the model:

* ``_LlamaBackend`` (the fast path) for Llama-family decoders (``llama``, ``mistral``, ``qwen2``, ``qwen3``;
  full attention, static RoPE, SiLU MLP, plain ``nn.Linear`` projections): a lean re-implementation of the
  decoder's forward that reads the model's own parameters (no copies, so the engine always sees the policy's
  current weights). Decode keeps the residual stream feature-major (``[hidden, B]``) and computes every
  projection as ``W @ x`` (on CPU, MKL runs that orientation ~1.5x faster than ``x @ W^T`` for decode-sized
  batches) with the residual adds fused in (``addmm_``); the KV cache is preallocated to the final length,
  attention reads only its filled part, RoPE comes from a table built once from the model's rotary module,
  and the LM head only sees the last position. The prefill packs the prompts' tokens without padding for
  the projections and MLPs (padding is used inside attention only). It is checked against the HF forward in
  the tests (same greedy tokens as ``generate``, log-probs to 1e-5) for Llama (MHA and GQA), Qwen2 and Qwen3.
  LoRA adapters (a peft model) run as low-rank terms beside the frozen weights (tests/train/test_lora.py).
* ``_HFBackend`` (any ``PreTrainedModel`` causal LM): the model's own forward with ``use_cache=True``,
  ``logits_to_keep=1``, explicit ``position_ids`` and attention mask, and a KV cache whose full-attention
  layers are preallocated to the final length (no ``torch.cat`` growth per step).

The loop samples with :func:`reinforcepp.rollout.sampling.sample_next`, writes into preallocated output
buffers, checks EOS with a batched op, syncs with the host once per step (to stop when every sequence has
finished), and drops finished rows from the batch and the KV cache once enough of them have stopped.

``max_batch_tokens`` bounds the memory: the prompts then go through in consecutive chunks whose KV cache
(rows x (longest prompt of the chunk + max_new_tokens) token slots, :mod:`.budget`) fits it, and the chunks'
outputs are joined into one :class:`Rollout` laid out as an unchunked one. With :class:`RowStreams` each
chunk gets its rows' keys, so every row draws the same random numbers as in the unchunked call: the same
tokens, and log-probs equal up to float rounding (matmul kernels sum in an order that depends on the batch's
shape; ~1e-6 here, which could flip a token only for a draw within rounding of a boundary of the sampling
distribution). A ``torch.Generator`` is consumed chunk after chunk: the samples are reproducible but differ
from the unchunked call's.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from reinforcepp.models.inputs import left_pad

from .base import Rollout, SamplingParams
from .budget import prompt_chunks
from .hf_backend import _HFBackend
from .llama_backend import _LlamaBackend, fast_path_unsupported_reason, unwrap_peft
from .sampling import sample_next
from .streams import RowStreams
from .stop import EosStopper, StopStringMatcher, resolve_eos_token_ids

__all__ = ["TorchEngine", "fast_path_unsupported_reason"]


class TorchEngine:
    """:class:`~reinforcepp.rollout.base.RolloutEngine` on a HF causal LM, in-process (shares the policy module).

    Args:
        model: a HF ``PreTrainedModel`` causal LM (any device/dtype; on CPU use float32).
        tokenizer: gives the pad id, the EOS ids (with the model's ``generation_config``) and decodes for
            stop strings. May be None if ``pad_token_id`` is given and no stop strings are used.
        fast_path: ``None`` (default) uses the Llama-family fast path when the model supports it, ``False``
            always runs the model's own forward, ``True`` requires the fast path (raises if unsupported).
        compact_fraction: drop finished rows from the batch and the KV cache once at least this fraction of
            the running rows has finished (0 or None: never).
        pad_token_id: overrides the tokenizer's / model's pad id.
        max_batch_tokens: bound on the KV cache in token slots (rows x (prompt + max_new_tokens) positions);
            prompts are rolled out in consecutive chunks that fit it, at least one prompt's n samples each.
            None: all prompts at once.
        fuse_qkv, fuse_gate_up: the fast path's decode runs one matmul for Q, K and V (and one for gate and
            up) on weights concatenated at each rollout from the policy's current ones (a copy, freed with the
            rollout); the same samples, log-probs to float rounding.
        compile: ``torch.compile`` the fast path's decode step (one whole graph, sizes symbolic, compiled once
            per model shape and process; :func:`.llama_backend._compiled_decode_step`). The first rollout pays
            the compilation (on this project's CPU: 15-40 s at the tiny shape, 70-80 s at SmolLM2-135M's); see
            ``rollout.compile`` and docs/performance.md for where it pays.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        fast_path: bool | None = None,
        compact_fraction: float | None = 0.25,
        pad_token_id: int | None = None,
        max_batch_tokens: int | None = None,
        fuse_qkv: bool = False,
        fuse_gate_up: bool = False,
        compile: bool = False,
    ):
        if max_batch_tokens is not None and max_batch_tokens <= 0:
            raise ValueError(f"max_batch_tokens must be > 0 or None, got {max_batch_tokens}")
        self.model = model
        self.fuse_qkv, self.fuse_gate_up, self.compile = fuse_qkv, fuse_gate_up, compile
        self.max_batch_tokens = max_batch_tokens
        self.tokenizer = tokenizer
        self.fast_path = fast_path
        self.compact_fraction = compact_fraction or 0.0
        if pad_token_id is None:
            pad_token_id = getattr(tokenizer, "pad_token_id", None)
        if pad_token_id is None:
            pad_token_id = getattr(getattr(model, "generation_config", None), "pad_token_id", None)
        if pad_token_id is None:
            pad_token_id = getattr(model.config, "pad_token_id", None)
        if pad_token_id is None:
            eos = resolve_eos_token_ids((), tokenizer, model)
            pad_token_id = eos[0] if eos else 0
        self.pad_token_id = int(pad_token_id)
        self.last_backend: str | None = None  # "fast" or "hf", for inspection
        self.last_stats: dict[str, int] = {}  # decoding steps, batch compactions and chunks of the last call

    def sync_weights(self, policy: torch.nn.Module) -> None:
        """No-op: the engine runs the policy module itself."""

    def _backend(self, max_length: int):
        model = unwrap_peft(self.model)  # a LoRA (PEFT) model: the inner model, whose layers run the adapters
        if self.fast_path is False:
            return _HFBackend(model)
        reason = fast_path_unsupported_reason(model, max_length)
        if reason is None:
            return _LlamaBackend(model, fuse_qkv=self.fuse_qkv, fuse_gate_up=self.fuse_gate_up, compile=self.compile)
        if self.fast_path:
            raise ValueError(f"fast path unavailable: {reason}")
        return _HFBackend(model)

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        n: int = 1,
        generator: torch.Generator | RowStreams | None = None,
    ) -> Rollout:
        """Sample ``n`` responses to each prompt; see :class:`~reinforcepp.rollout.base.Rollout` for the layout.
        With :class:`RowStreams` each row's draws depend only on its own key (not on the batch it is in)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if params.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {params.max_new_tokens}")
        if not params.greedy and params.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {params.temperature} (use greedy=True)")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("empty prompt")
        if isinstance(generator, RowStreams) and generator.keys.numel() != len(prompts) * n:
            raise ValueError(f"{generator.keys.numel()} row streams for {len(prompts)} prompts x {n} samples")
        pad = self.pad_token_id
        if not prompts:
            empty = torch.zeros(0, 0, dtype=torch.long)
            return Rollout(empty, empty.clone(), empty.clone(), empty.clone(), torch.zeros(0, 0), torch.zeros(0, dtype=torch.bool))
        ids, mask = left_pad(prompts, pad)
        B, T = len(prompts) * n, params.max_new_tokens
        prompt_ids, prompt_mask = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
        if T == 0:
            return Rollout(
                prompt_ids, prompt_mask, torch.zeros(B, 0, dtype=torch.long), torch.zeros(B, 0, dtype=torch.long),
                torch.zeros(B, 0), torch.zeros(B, dtype=torch.bool),
            )

        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                ids_out, mask_out, lp_out, finished = self._run_chunks(prompts, params, n, generator)
        finally:
            if was_training:
                self.model.train()
        lengths = mask_out.sum(1)
        width = int(lengths.max()) if B else 0
        return Rollout(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            response_ids=ids_out[:, :width].cpu().contiguous(),
            response_mask=mask_out[:, :width].long().cpu().contiguous(),
            logprobs=lp_out[:, :width].float().cpu().contiguous(),
            finished=finished.cpu(),
        )

    def _run_chunks(self, prompts: list[list[int]], params: SamplingParams, n: int, generator):
        """Roll out the prompts chunk by chunk (each left padded to its own longest prompt: its cache is sized
        by its own prompts); outputs [B, T] joined in prompt order. Stats: steps and compactions summed."""
        chunks = prompt_chunks([len(p) for p in prompts], n, params.max_new_tokens, self.max_batch_tokens)
        outputs, stats = [], Counter()
        for start, end in chunks:
            ids, mask = left_pad(prompts[start:end], self.pad_token_id)
            out, chunk_stats = self._run(ids, mask, params, n, _rows_of(generator, start * n, end * n))
            outputs.append(out)
            stats.update(chunk_stats)
        self.last_stats = dict(stats, chunks=len(chunks))
        return [torch.cat(parts) for parts in zip(*outputs)]

    def _run(self, ids, mask, params: SamplingParams, n: int, generator):
        """Sample the prompts [P, Lp] at once; ((ids, mask, log-probs [B, T], finished [B]), step counts)."""
        P, Lp = ids.shape
        B, T = P * n, params.max_new_tokens
        backend = self._backend(Lp + T)
        self.last_backend = "fast" if isinstance(backend, _LlamaBackend) else "hf"
        device = backend.device
        pad = self.pad_token_id
        eos = EosStopper(resolve_eos_token_ids(params.eos_token_ids, self.tokenizer, self.model), device)
        stops = StopStringMatcher(self.tokenizer, params.stop_strings, B) if params.stop_strings else None

        logits = backend.prefill(ids.to(device), mask.to(device), Lp + T, n)
        if n > 1:
            logits = logits.repeat_interleave(n, 0)

        out_ids = torch.full((B, T), pad, dtype=torch.long, device=device)
        out_mask = torch.zeros(B, T, dtype=torch.bool, device=device)
        out_lp = torch.zeros(B, T, dtype=torch.float32, device=device)
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)  # rows of the running batch that have stopped
        rows: torch.Tensor | None = None  # running-batch row -> output row (None: identity)
        any_done = False
        steps = compactions = 0
        streams = generator if isinstance(generator, RowStreams) else None
        sample_kwargs = dict(
            temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
            greedy=params.greedy, generator=None if streams else generator,
        )
        for t in range(T):
            banned = eos.ids if t < params.min_new_tokens and eos else None
            uniforms = streams.uniforms(t, rows) if streams and not params.greedy else None
            tokens, logprobs = sample_next(logits, **sample_kwargs, banned=banned, uniforms=uniforms)
            steps += 1
            alive = ~done
            if any_done:
                tokens = tokens.masked_fill(done, pad)
                logprobs = logprobs.masked_fill(done, 0.0)
            if rows is None:
                out_ids[:, t] = tokens
                out_lp[:, t] = logprobs
                out_mask[:, t] = alive
            else:
                out_ids[rows, t] = tokens
                out_lp[rows, t] = logprobs
                out_mask[rows, t] = alive
            if eos:
                done = done | (eos.hits(tokens) & alive)
            if stops is not None:
                running = alive.nonzero().squeeze(1).tolist()
                out_rows = running if rows is None else rows[running].tolist()
                token_list = tokens[running].tolist()
                hit = set(stops.update(out_rows, token_list))
                if hit:
                    done[[i for i, r in zip(running, out_rows) if r in hit]] = True
            n_done = int(done.sum())  # the one host sync per step
            any_done = n_done > 0
            if n_done == done.numel() or t == T - 1:
                break
            if self.compact_fraction and n_done >= self.compact_fraction * done.numel():
                keep = (~done).nonzero().squeeze(1)
                dropped = done.nonzero().squeeze(1)
                finished[dropped if rows is None else rows[dropped]] = True
                rows = keep if rows is None else rows[keep]
                backend.select(keep)
                tokens = tokens.index_select(0, keep)
                done = torch.zeros(keep.numel(), dtype=torch.bool, device=device)
                any_done = False
                compactions += 1
            logits = backend.decode(tokens)
        if rows is None:
            finished |= done
        else:
            finished[rows] |= done
        return (out_ids, out_mask, out_lp, finished), {"steps": steps, "compactions": compactions}


def _rows_of(generator: torch.Generator | RowStreams | None, start: int, end: int):
    """The random source of rows [start, end): their own streams, or the shared generator (consumed in turn)."""
    if isinstance(generator, RowStreams):
        return RowStreams(generator.keys[start:end])
    return generator
