"""FSDP2 sharding of the models under torchrun, and the full weights the sampler needs from a sharded policy.

Every decoder layer (the classes a Hugging Face model lists in ``_no_split_modules``) is one FSDP unit, then
the root takes what is left (embeddings, final norm, LM head, a value head): each rank keeps 1/N of every
parameter, gradient and optimizer state, and a layer's full weights exist only while it computes.

Rollout: the sampler runs a plain (unsharded) replica of the policy, refreshed from the shards once per RL
step, tensor by tensor (each rank gathers one full parameter at a time, in the same order on every rank).
The replica costs one full copy of the weights per rank, like the inference engine of verl and TRL, and in
exchange a rank's decoding needs no collective, so ranks may stop decoding at different steps.
"""

from __future__ import annotations

import copy
import types

import torch

from reinforcepp.config import Config

from . import dist
from .forward import HIDDEN_METHOD, response_hidden


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules to shard one by one: every instance of a class some HF model inside lists as no-split."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def mixed_precision(cfg: Config, device: torch.device):
    """bf16 compute with fp32 master weights and reductions (FSDP2's MixedPrecisionPolicy), or None."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    choice = cfg.dist.mixed_precision
    if choice == "none" or (choice == "auto" and device.type != "cuda"):
        return None
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard(model: torch.nn.Module, cfg: Config, device: torch.device) -> torch.nn.Module:
    """Apply FSDP2 in place (layers bottom-up, then the root); call before building the optimizer."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard, register_fsdp_forward_method

    # an explicit mesh of the run's device type (a default mesh on a GPU host moves CPU models to CUDA)
    mesh = init_device_mesh(device.type, (dist.world_size(),))
    options = {"mesh": mesh}
    if (mp := mixed_precision(cfg, device)) is not None:
        options["mp_policy"] = mp
    if cfg.dist.cpu_offload:  # pinned host memory needs an accelerator (and only helps copies to one)
        options["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    for layer in decoder_layers(model):
        fully_shard(layer, **options)
    fully_shard(model, **options)
    # policy_logprobs runs the decoder without the LM head (to fuse the head with the log-softmax, or to share
    # prompts): as a forward method of the root, which then gathers the root's parameters first
    setattr(model, HIDDEN_METHOD, types.MethodType(response_hidden, model))
    register_fsdp_forward_method(model, HIDDEN_METHOD)
    return model


def rollout_replica(policy: torch.nn.Module, cfg: Config, device: torch.device) -> torch.nn.Module:
    """An unsharded copy of the policy for the sampler (made before sharding; no gradients), in the compute
    dtype: bf16 under mixed precision (half the memory of the fp32 masters; log pi_old is recomputed by the
    policy's own forward, so the sampler's precision does not enter the loss)."""
    replica = copy.deepcopy(policy)
    replica.requires_grad_(False)
    mp = mixed_precision(cfg, device)
    replica.to(device=device, dtype=None if mp is None else mp.param_dtype)
    return replica.eval()


@torch.no_grad()
def sync_replica(replica: torch.nn.Module, policy: torch.nn.Module) -> None:
    """Copy the sharded policy's current weights into the replica, one full tensor at a time. Frozen weights (a
    LoRA model's base) are copied at the first sync only (after a resume has loaded them): they never change,
    and gathering them every step would cost the full model's traffic for a few adapter tensors."""
    targets = replica.state_dict()
    skip = _frozen_names(policy) if getattr(replica, "_frozen_synced", False) else set()
    for name, value in policy.state_dict().items():
        if name in skip:
            continue
        full = dist.full_tensor(value)
        if name in targets:
            targets[name].copy_(full)
    replica._frozen_synced = True


def _frozen_names(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on rank 0's CPU (other ranks get {}), gathered one tensor at a time."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def export_copy(replica: torch.nn.Module, policy: torch.nn.Module) -> torch.nn.Module | None:
    """The sharded policy's full float32 weights in an unsharded model on rank 0's CPU (None elsewhere),
    for the Hugging Face export: the replica's architecture, the master weights' precision."""
    full = full_state_dict(policy)  # every rank takes part; rank 0 receives
    if not dist.is_main():
        return None
    model = copy.deepcopy(replica).to(device="cpu", dtype=next(iter(full.values())).dtype)
    model.load_state_dict(full)
    return model


def reshard(model: torch.nn.Module | None) -> None:
    """Free the root's gathered parameters after a pass without gradients (FSDP2 keeps them otherwise)."""
    if model is not None and hasattr(model, "reshard"):
        model.reshard()
