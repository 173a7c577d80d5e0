"""``train.compile``: each decoder layer of the trainer's models compiled once, per block (as torchtitan does).

Only the decoder layers (the classes the model lists in ``_no_split_modules``, :func:`sharding.decoder_layers`)
are compiled: each layer's ``forward`` becomes ``torch.compile(forward, dynamic=True)``. One graph serves every
layer (their code is the same, their weights are inputs) and batch and sequence sizes are symbolic, so a new
micro-batch shape does not recompile: one graph with gradient and one without (the no-grad passes: log pi_old,
the reference), each with its backward. Embeddings, the final norm, the LM head (fused with the log-softmax,
:func:`.forward.policy_logprobs`) and the mask building stay eager.

A call that carries a KV cache (the shared-prefix forward, :mod:`.shared_prefix`) runs the layer eagerly: traced,
HF's ``DynamicCache.update`` specializes on the layer index and on whether the cache is still empty (one graph
per layer and pass, past dynamo's recompile limit of 8 at the second layer); with the update left out of the
graph (``torch.compiler.disable``) dynamo still guards on the layer index, and unspecializing it
(``allow_unspec_int_on_nn_module``) gave 19 graph fragments and ~50 s of compilation on a 6-layer toy model.

The sampler's Llama fast path reads the layers' weights and never calls the layers, so decoding is untouched (the
generic HF fallback of other architectures calls them with a cache: eager too). Under torchrun the layers are
compiled after FSDP2 has sharded them: the FSDP hooks stay on the module's ``__call__``, outside the graph, as
torchtitan keeps them eager.
"""

from __future__ import annotations

import functools

import torch

from .sharding import decoder_layers

CACHE_ARGUMENTS = ("cache", "past_key_values", "past_key_value")  # transformers 5.x names it cache


def compile_layers(model: torch.nn.Module | None) -> int:
    """Compile every decoder layer of ``model`` in place (lazily: at its first call); the number compiled."""
    if model is None:
        return 0
    layers = decoder_layers(model)
    for layer in layers:
        if getattr(layer, "_reinforcepp_compiled", False):
            continue
        layer.forward = _dispatching(layer.forward)
        layer._reinforcepp_compiled = True
    return len(layers)


def _dispatching(eager):
    compiled = torch.compile(eager, dynamic=True)

    @functools.wraps(eager)
    def forward(*args, **kwargs):
        if any(kwargs.get(name) is not None for name in CACHE_ARGUMENTS):
            return eager(*args, **kwargs)
        return compiled(*args, **kwargs)

    return forward
