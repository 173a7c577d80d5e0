"""Checkpoints of a sharded (torchrun + FSDP2) run, with torch.distributed.checkpoint (DCP).

Same directory contract as :mod:`.checkpoint` (``root/step_N/`` with ``meta.json`` and a ``COMPLETE`` marker
written last, built in a temp dir and renamed into place, last-k retention), but the models and optimizers
live in ``sharded/``: every rank writes its own shards, DCP's coordinator writes ``.metadata`` only after
all ranks finished, then rank 0 writes the small objects (schedulers, data position, reward normalizer,
RNG), the marker, and renames, and every rank waits for it. A checkpoint therefore counts only when every
rank finished. DCP reshards on load: a checkpoint of N ranks resumes on M ranks, or in one process.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from . import dist
from .checkpoint import (
    MARKER,
    META_FILE,
    TMP_PREFIX,
    CheckpointError,
    _fsync_tree,
    _move_into_place,
    _prune,
    _write_json,
    _write_objects,
    checkpoint_problem,
    file_checksums,
    read_layout,
)
from .finite import first_nonfinite

SHARDED = "sharded"
FORMAT = "dcp"

# (model, optimizer or None) by name: a model's weights and, when given, its optimizer's state
Trainables = Mapping[str, tuple[torch.nn.Module, torch.optim.Optimizer | None]]


def is_sharded(path: Path) -> bool:
    """Whether the checkpoint at ``path`` was written by :func:`save_sharded`."""
    try:
        return json.loads((Path(path) / META_FILE).read_text()).get("format") == FORMAT
    except (OSError, json.JSONDecodeError):
        return False


def _state(trainables: Trainables) -> dict[str, Any]:
    """Model and optimizer state dicts keyed by parameter names (sharded tensors under FSDP2)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    state = {}
    for name, (model, optimizer) in trainables.items():
        state[name] = get_model_state_dict(model)
        if optimizer is not None:
            state[f"{name}_optimizer"] = get_optimizer_state_dict(model, optimizer)
    return state


def save_sharded(root: str | Path, step: int, trainables: Trainables, objects: Mapping[str, Any],
                 *, keep: int | None) -> Path:
    """Write ``root/step_{step:08d}/`` from every rank (call on all ranks); returns its path."""
    import torch.distributed.checkpoint as dcp

    root = Path(root)
    final = root / f"step_{step:08d}"
    state = _state(trainables)
    # each rank checks its shards; every rank refuses if any found a NaN or inf
    problems = [p for p in dist.gather_objects(first_nonfinite({**state, **objects})) if p is not None]
    if problems:
        raise CheckpointError(f"refusing to write {final}: {problems[0]}; nothing non-finite is saved")
    tmp = root / str(dist.broadcast_object(f"{TMP_PREFIX}{final.name}-{os.getpid()}-{secrets.token_hex(4)}"))
    if dist.is_main():
        tmp.mkdir(parents=True)
    dist.barrier()
    try:
        dcp.save(state, checkpoint_id=str(tmp / SHARDED))  # returns once .metadata is written
        if dist.is_main():
            _write_objects(tmp, objects)
            layout = {"format": FORMAT, "step": step, "world_size": dist.world_size(),
                      "modules": sorted(trainables), "objects": {name: "state_dict" for name in objects}, "meta": {},
                      "sha256": file_checksums(tmp)}  # every rank's shards: DCP returned after all were written
            _write_json(tmp / META_FILE, layout)
            _write_json(tmp / MARKER, {"step": step})
            _fsync_tree(tmp)
            _move_into_place(tmp, final)
            _prune(root, keep=keep, protect=final)
    except BaseException:
        if dist.is_main():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    dist.barrier()  # no rank goes on before the checkpoint is complete
    return final


def load_sharded(path: str | Path, trainables: Trainables, objects: Mapping[str, Any], *, verify: bool = True) -> int:
    """Restore models, optimizers and stateful objects in place (call on all ranks, any number of them,
    sharded or not); returns the checkpoint's step. Objects saved as values are returned by name."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    path = Path(path)
    if not (path / MARKER).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER} file)")
    # the checksums, read by one rank (False: the caller just did)
    problem = dist.broadcast_object(checkpoint_problem(path) if dist.is_main() and verify else None)
    if problem is not None:
        raise CheckpointError(problem)
    layout = read_layout(path)
    missing = sorted(set(trainables) - set(layout["modules"]))
    if missing:
        raise CheckpointError(f"{path} holds no {missing} (it has {layout['modules']})")
    state = _state(trainables)
    dcp.load(state, checkpoint_id=str(path / SHARDED))  # in place, resharded to this run's layout
    for name, (model, optimizer) in trainables.items():
        set_model_state_dict(model, state[name])
        if optimizer is not None:
            set_optimizer_state_dict(model, optimizer, state[f"{name}_optimizer"])
    for name, target in objects.items():
        target.load_state_dict(torch.load(path / f"{name}.pt", map_location="cpu", weights_only=True))
    return int(layout["step"])


def load_full_into_sharded(path: str | Path, trainables: Trainables, optimizer_files: Mapping[str, str]) -> None:
    """Put a one-process checkpoint's full weights and optimizer states (safetensors + torch optimizer state
    dicts keyed by parameter index, in ``optimizer_files[name].pt``) into sharded models: every rank reads the
    files and keeps its shards."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    path = Path(path)
    full = StateDictOptions(full_state_dict=True)
    for name, (model, optimizer) in trainables.items():
        weights = load_file(path / f"{name}.safetensors")
        set_model_state_dict(model, _with_tied(model, weights), options=full)
        if optimizer is not None:
            saved = torch.load(path / f"{optimizer_files[name]}.pt", map_location="cpu", weights_only=True)
            set_optimizer_state_dict(model, optimizer, _by_name(model, saved), options=full)


def _with_tied(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors stores a tied weight once: fill its other names from the same tensor."""
    out = dict(weights)
    shared: dict[int, list[str]] = {}
    for key, param in model.named_parameters(remove_duplicate=False):
        shared.setdefault(id(param), []).append(key)
    for names in shared.values():
        present = [k for k in names if k in out]
        for k in names:
            if k not in out and present:
                out[k] = out[present[0]]
    return out


def _by_name(model: torch.nn.Module, saved: dict[str, Any]) -> dict[str, Any]:
    """A torch optimizer state dict keyed by parameter index, rekeyed by parameter name: indices follow the
    order of the trainable parameters the optimizer was built from (train.optim.build_optimizer)."""
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in saved["param_groups"]]
    return {"state": {names[i]: s for i, s in saved["state"].items()}, "param_groups": groups}
