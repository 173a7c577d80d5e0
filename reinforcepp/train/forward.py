"""Forward passes over experience: response log-probs (and entropy) from the policy, values from the critic."""

from __future__ import annotations

import contextlib
from functools import partial

import torch

from reinforcepp.algos import compute_dtype, entropy_from_logits, head_logprobs, token_logprobs
from reinforcepp.models.inputs import is_llama_family
from reinforcepp.models.lora import base_causal_lm

from . import dist
from .experience import Experience
from .shared_prefix import prompt_groups, shared_prefix_hidden, uses_checkpointing


def autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The dtype ``train.autocast`` runs the trainer's forward passes in on ``device``; None: no autocast (the
    weights' own dtype). "auto" is bf16 on CUDA (over fp32 master weights) and none on CPU, where bf16 matmuls
    are slow. The one place that decides the numerics of the update, log pi_old, the reference and the critic."""
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if setting == "none":
        return None
    if setting == "bfloat16":
        return torch.bfloat16
    raise ValueError(f"train.autocast: expected 'auto', 'bfloat16' or 'none', got {setting!r}")


def autocast_for(device: torch.device, setting: str = "auto") -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(setting, device)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def checkpointing(model: torch.nn.Module, enabled: bool):
    """Turn on activation checkpointing for the forwards inside (``train.gradient_checkpointing``).

    HF checkpoints a layer only when the layer is in training mode, and RL keeps its models in eval mode
    (no dropout: the updated policy is the one that sampled). So only the layers' own flags are set, not
    their submodules': dropout stays off.
    """
    layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False)] if enabled else []
    saved = [layer.training for layer in layers]
    for layer in layers:
        layer.training = True
    try:
        yield
    finally:
        for layer, mode in zip(layers, saved):
            layer.training = mode


def compute_device(model: torch.nn.Module) -> torch.device:
    """Where the model computes: its parameters' device, or for FSDP2 shards (offloaded to CPU memory or
    not) the device of their mesh, where FSDP gathers them."""
    param = next(model.parameters())
    mesh = getattr(param, "device_mesh", None)
    if mesh is not None and mesh.device_type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return param.device


def policy_logprobs(
    model: torch.nn.Module, exp: Experience, temperature: float, *, with_entropy: bool = False,
    chunked: bool = False, autocast: str = "auto", shared_prefix: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(o_t | prompt, o_<t) / temperature-scaled, for every response position.

    The LM head runs only on the response positions, not the prompt. Without gradient (the reference and
    old-policy passes), or with ``chunked``, a Llama-family model (logits exactly ``lm_head(h)``) runs its
    LM head in row chunks fused with the log-softmax (:func:`head_logprobs`): no [B, T, V] logits in
    memory; a LoRA (PEFT) model takes this path through its inner model, whose layers carry the adapters
    (unless the LM head has one). Otherwise the model's own forward with ``logits_to_keep`` gives the logits.
    Entropy is that of the sampling distribution softmax(z / temperature). ``autocast``: train.autocast
    (:func:`autocast_dtype`). ``shared_prefix`` (train.shared_prefix): on that same Llama-family path, when
    rows of the batch share a prompt on some rank and no activation checkpointing is on, each distinct prompt
    runs once (:func:`shared_prefix_hidden`); the same numbers to float rounding.

    Under FSDP2 the decoder runs through the root's registered :data:`HIDDEN_METHOD` (:func:`sharding.shard`),
    so that the root gathers its parameters (embeddings, final norm, LM head) first, and every rank makes the
    same decision to share: a rank whose decoder ran twice (prompts, then responses) while another's ran once
    would pair their layers' all-gathers wrongly and hang.

    Shapes: -> (logp [B, T], entropy [B, T] or None), float32 (float64 for a float64 model), on the model's
    device.
    """
    device = compute_device(model)
    B, T = exp.response_ids.shape
    tokens = exp.response_ids.to(device)
    causal_lm = base_causal_lm(model)  # a PEFT wrapper's forward is its inner model's
    fused = chunked or not torch.is_grad_enabled()  # the LM head fused with the log-softmax
    sharded = callable(getattr(model, HIDDEN_METHOD, None))
    head = plain_lm_head(causal_lm, sharded=sharded) if fused or shared_prefix else None
    groups = _shared_groups(causal_lm, exp) if shared_prefix and head is not None else None
    with autocast_for(device, autocast):
        if groups is not None or (head is not None and fused):
            run_decoder = getattr(model, HIDDEN_METHOD) if sharded else partial(response_hidden, model)
            hidden = run_decoder(_inputs_only(exp), device, groups)  # [B, T, H]
            if fused:
                rows = hidden.reshape(B * T, hidden.shape[-1])
                logp, entropy = head_logprobs(rows, head.weight, tokens.reshape(B * T), temperature,
                                              with_entropy=with_entropy)
                return logp.view(B, T), None if entropy is None else entropy.view(B, T)
            logits = head(hidden)
        else:
            logits = model(**exp.model_inputs(device), use_cache=False, logits_to_keep=T + 1).logits[:, :-1]
    logits = logits.to(compute_dtype(logits))  # [B, T, V]
    if temperature != 1.0:
        logits = logits / temperature
    logp = token_logprobs(logits, tokens)
    entropy = entropy_from_logits(logits) if with_entropy else None
    return logp, entropy


# The name under which sharding.shard registers response_hidden as a forward method of an FSDP2 root.
HIDDEN_METHOD = "reinforcepp_response_hidden"


def response_hidden(model: torch.nn.Module, exp: Experience, device: torch.device,
                    groups: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """The final hidden states that predict each response token: position Lp - 1 + t of the whole rows'
    forward for token t, or, given the batch's prompt ``groups`` (:func:`prompt_groups`), the same from each
    distinct prompt computed once (:func:`shared_prefix_hidden`). ``model``: a Llama-family causal LM (a PEFT
    wrapper: its inner model).

    Shapes: exp with [B, Lp] prompts and [B, T] responses -> [B, T, H].
    """
    decoder = base_causal_lm(model).model
    if groups is not None:
        return shared_prefix_hidden(decoder, exp, device, groups)
    T = exp.response_ids.shape[1]
    hidden = decoder(**exp.model_inputs(device), use_cache=False).last_hidden_state
    return hidden[:, -T - 1 : -1]  # position Lp - 1 + t predicts token t


def _shared_groups(causal_lm: torch.nn.Module, exp: Experience) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The micro-batch's :func:`prompt_groups` when the shared-prefix forward runs, else None. It runs when on
    every rank it can (prompt and response positions, no layer checkpointing its activations: HF drops the
    cache there) and on some rank a prompt repeats in the micro-batch. One all-reduce under torchrun, so that
    every rank runs its decoder as often (a rank without a repeat shares too: each row its own prompt)."""
    can = 0 not in exp.response_ids.shape and exp.prompt_ids.shape[1] > 0 and not uses_checkpointing(causal_lm.model)
    groups = prompt_groups(exp.prompt_ids, exp.prompt_mask) if can else None
    repeats = groups is not None and len(groups[0]) < exp.prompt_ids.shape[0]
    cannot, repeating = dist.global_sum(torch.tensor([float(not can), float(repeats)])).tolist()
    return groups if cannot == 0 and repeating > 0 else None


def _inputs_only(exp: Experience) -> Experience:
    """The ids and masks of ``exp``: what the decoder reads (an FSDP root's pre-forward would otherwise cast
    and move the float fields too)."""
    return Experience(exp.prompt_ids, exp.prompt_mask, exp.response_ids, exp.response_mask)


def plain_lm_head(model: torch.nn.Module, *, sharded: bool = False) -> torch.nn.Linear | None:
    """The bias-free ``nn.Linear`` LM head of a bare Llama-family model, else None: other architectures,
    wrapped models (DDP; PEFT: pass its inner model, :func:`base_causal_lm`), LM heads with a LoRA adapter,
    and heads with hooks or sharded weights (accelerate offloading), which need their own forward.
    ``sharded``: the model is an FSDP2 root that runs :data:`HIDDEN_METHOD` (its parameters gathered before
    the decoder runs and kept after it, as FSDP2 does for a root), so a sharded weight is taken."""
    head = dict(model.named_children()).get("lm_head")  # its own: a wrapper's attribute may reach an inner one
    if not is_llama_family(model) or type(head) is not torch.nn.Linear or head.bias is not None:
        return None
    hooked = head._forward_pre_hooks or head._forward_hooks or getattr(head, "_hf_hook", None) is not None
    if hooked or (type(head.weight.data) is not torch.Tensor and not sharded):
        return None
    return head


def critic_values(critic: torch.nn.Module, exp: Experience, *, autocast: str = "auto") -> torch.Tensor:
    """V_t: the critic's value of the state before response token t. Shapes: -> [B, T] float32."""
    device = compute_device(critic)
    T = exp.response_ids.shape[1]
    inputs = exp.model_inputs(device)
    with autocast_for(device, autocast):
        values = critic(**inputs)  # [B, Lp + T]
    return values[:, -T - 1 : -1].float()
