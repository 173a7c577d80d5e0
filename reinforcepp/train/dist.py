"""The one place where data-parallel ranks talk to each other (torch.distributed under torchrun).

Without torchrun (no WORLD_SIZE in the environment) every function is the identity of a 1-rank world,
and nothing is initialized. Under ``torchrun --nproc-per-node N`` :func:`init` starts the default process
group (gloo on CPU; NCCL for CUDA tensors, with gloo beside it for CPU ones) with an explicit timeout, so a rank that stops answering fails the job
instead of hanging it; torchrun itself ends the job when a rank dies.
"""

from __future__ import annotations

import datetime
import functools
import os
import time
from collections.abc import Callable, Sequence

import torch
import torch.distributed as torch_dist


_seconds_in_collectives = 0.0
_depth = 0  # a collective that calls another is timed once


def collective_seconds() -> float:
    """Wall time this process has spent in the collectives below (not FSDP's own, inside forward/backward)."""
    return _seconds_in_collectives


def _timed(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _seconds_in_collectives, _depth
        start = time.perf_counter()
        _depth += 1
        try:
            return fn(*args, **kwargs)
        finally:
            _depth -= 1
            if _depth == 0:
                _seconds_in_collectives += time.perf_counter() - start

    return wrapper


def launched() -> bool:
    """True under torchrun (or any launcher that sets the env:// rendezvous variables)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def initialized() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def world_size() -> int:
    return torch_dist.get_world_size() if initialized() else int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    return torch_dist.get_rank() if initialized() else int(os.environ.get("RANK", 0))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """Rank 0: the one that prints, logs metrics and writes reports and the final model."""
    return rank() == 0


def init(device: torch.device, timeout_s: float) -> None:
    """Join the process group torchrun set up (a no-op without torchrun or when already joined)."""
    if not launched() or initialized():
        return
    # on GPUs, gloo too: CPU tensors (offloaded shards and their gradient norms) need a CPU backend
    backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    torch_dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                  device_id=device if device.type == "cuda" else None)


def shutdown(*, finished: bool = False) -> None:
    """Destroy the process group. ``finished``: every rank got here after a whole run, so they first wait for
    each other: a rank that destroyed its gloo group while rank 0 still wrote the final model was seen to abort
    ("terminate called without an active exception"). After an error no rank waits (the others may never come)."""
    if initialized():
        if finished:
            barrier()
        torch_dist.destroy_process_group()


def _device() -> torch.device:
    """Where collectives run: NCCL needs CUDA tensors, gloo takes CPU ones."""
    if "nccl" in torch_dist.get_backend():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@_timed
def _all_reduce(local: torch.Tensor, op) -> torch.Tensor:
    if not initialized():
        return local
    out = local.detach().to(_device(), copy=True)
    torch_dist.all_reduce(out, op=op)
    return out.to(local.device)


def global_sum(local: torch.Tensor) -> torch.Tensor:
    """Sum of ``local`` over data-parallel ranks (on ``local``'s device and dtype)."""
    return _all_reduce(local, torch_dist.ReduceOp.SUM)


def global_max(local: torch.Tensor) -> torch.Tensor:
    """Elementwise max of ``local`` over data-parallel ranks."""
    return _all_reduce(local, torch_dist.ReduceOp.MAX)


@_timed
def gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows in rank order ([b_r, ...] -> [sum b_r, ...]); the trailing shapes
    must agree, the row counts may differ."""
    if not initialized():
        return local
    counts = gather_objects(local.shape[0])
    device = _device()
    padded = torch.zeros((max(counts), *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in counts]
    torch_dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(local.device)


@_timed
def gather_objects(local: object) -> list[object]:
    """Every rank's picklable ``local``, in rank order (small things: counts, widths, strings)."""
    if not initialized():
        return [local]
    out: list[object] = [None] * world_size()
    torch_dist.all_gather_object(out, local)
    return out


@_timed
def broadcast_object(value: object, src: int = 0) -> object:
    """Rank ``src``'s ``value`` on every rank."""
    if not initialized():
        return value
    box = [value]
    torch_dist.broadcast_object_list(box, src=src)
    return box[0]


def all_ok(ok: bool) -> bool:
    """True when ``ok`` holds on every rank: lets every rank take the same branch (a rank-dependent
    branch around a collective would hang the others)."""
    if not initialized():
        return ok
    return bool(global_sum(torch.tensor([0.0 if ok else 1.0])).item() == 0)


@_timed
def barrier() -> None:
    if initialized():
        torch_dist.barrier()


def shard_range(total: int, parts: int | None = None, index: int | None = None) -> Sequence[int]:
    """The contiguous block of ``range(total)`` owned by rank ``index`` of ``parts`` (total divisible)."""
    parts = world_size() if parts is None else parts
    index = rank() if index is None else index
    size = total // parts
    return range(index * size, (index + 1) * size)


@_timed
def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """The whole of a sharded (DTensor) parameter, gathered from every rank; a plain tensor as it is."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value
