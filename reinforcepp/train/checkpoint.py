"""Atomic, resumable checkpoints for the RL loop, RNG state, and the final Hugging Face export.

A checkpoint is a directory `root/step_00000042/` holding:
    {name}.safetensors  one per module: its state dict (tied weights stored once)
    {name}.pt           one per object: an optimizer's/scheduler's state dict, or the object itself
    meta.json           {"step", "modules", "objects", "meta"}: the layout plus the caller's metadata
    COMPLETE            written last; a directory without it is not a checkpoint

It is written into a temp dir `root/.tmp-step_00000042-<pid>-<random>/`, fsynced, then renamed into
place, so a crash leaves the whole checkpoint or none of it. A crash can leave a temp dir behind; a
later save removes temp dirs that are older than the newest complete checkpoint.

Use:
    state = CheckpointState(
        modules={"policy": policy, "critic": critic},
        objects={"optimizer": optimizer, "scheduler": scheduler, "rng": capture_rng_state()},
        meta={"consumed_prompts": 1024},
    )
    save_checkpoint(root, step, state, keep=3)
    ...
    path = latest_checkpoint(root)
    loaded = load_checkpoint(path, modules={"policy": policy, "critic": critic},
                             objects={"optimizer": optimizer, "scheduler": scheduler})
    restore_rng_state(loaded.objects["rng"])
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import secrets
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_model, save_model

from .finite import first_nonfinite

MARKER = "COMPLETE"
META_FILE = "meta.json"
TMP_PREFIX = ".tmp-"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message names the path or part at fault."""


@dataclass
class CheckpointState:
    """What to save, by name.

    modules: `nn.Module`s, saved as safetensors and restored in place (strict). A DDP or torch.compile
        wrapper is looked through, so its checkpoint loads into the bare model and vice versa.
    objects: things with `state_dict()`/`load_state_dict()` (optimizers, schedulers: their state dict is
        saved and restored in place) or any other picklable value (e.g. `capture_rng_state()`), saved
        with `torch.save`.
    meta: JSON-able metadata (counters, the resolved config, ...).
    """

    modules: dict[str, torch.nn.Module] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedCheckpoint:
    """What `load_checkpoint` read. objects: every saved object (state dicts for stateful ones)."""

    path: Path
    step: int
    objects: dict[str, Any]
    meta: dict[str, Any]


def save_checkpoint(
    root: str | Path, step: int, state: CheckpointState, *, keep: int | None = 3, overwrite: bool = False
) -> Path:
    """Write `root/step_{step:08d}/` atomically, then keep only the newest `keep` checkpoints (None = all).

    overwrite: replace an existing checkpoint of the same step (e.g. after resuming from an older one).
    Returns the checkpoint's path.
    """
    _check_step(step)
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep: expected an int >= 1 or None, got {keep!r}")
    if not isinstance(state, CheckpointState):
        raise TypeError(f"state: expected a CheckpointState, got {type(state).__name__}")
    layout = _check_state(state)

    root = Path(root)
    final = root / f"step_{step:08d}"
    require_finite({**state.modules, **state.objects}, final)
    root.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite:
        raise CheckpointError(f"{final} already exists; pass overwrite=True to replace it")

    tmp = root / f"{TMP_PREFIX}{final.name}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        _write_modules(tmp, state.modules)
        _write_objects(tmp, state.objects)
        _write_json(tmp / META_FILE, {"step": step, **layout, "meta": state.meta})
        _write_json(tmp / MARKER, {"step": step})  # last: it is what makes the checkpoint complete
        _fsync_tree(tmp)
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(root, keep=keep, protect=final)
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under `root`, or None."""
    complete = complete_checkpoints(root)
    return complete[-1][1] if complete else None


def complete_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint under `root`, by increasing step."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and (child / MARKER).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def load_checkpoint(
    path: str | Path,
    *,
    modules: Mapping[str, torch.nn.Module] | None = None,
    objects: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
    weights_only: bool = True,
) -> LoadedCheckpoint:
    """Restore `modules` (strict) and stateful `objects` in place from the checkpoint at `path`.

    Returns every saved object and the metadata. weights_only=False is needed only for objects that
    are arbitrary Python classes; it unpickles code, so use it on checkpoints you trust.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if not (path / MARKER).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER} file)")
    try:
        layout = json.loads((path / META_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / META_FILE}: cannot be read ({exc})") from exc

    for name, module in (modules or {}).items():
        _require_saved(path, "module", name, layout["modules"])
        try:
            load_model(_unwrap(module), path / f"{name}.safetensors", strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path / name}.safetensors does not fit module {name!r}: {exc}") from exc

    loaded = {name: _load_object(path, name, map_location, weights_only) for name in layout["objects"]}
    for name, target in (objects or {}).items():
        _require_saved(path, "object", name, layout["objects"])
        if layout["objects"][name] != "state_dict":
            raise CheckpointError(
                f"object {name!r} in {path} was saved as a value, not a state dict: read it from the result's objects"
            )
        target.load_state_dict(loaded[name])
    return LoadedCheckpoint(path=path, step=int(layout["step"]), objects=loaded, meta=layout["meta"])


def save_hf_model(model: torch.nn.Module, tokenizer: Any, out_dir: str | Path, *, overwrite: bool = False,
                  subdirs: Mapping[str, Any] | None = None) -> Path:
    """Export `model` (+ `tokenizer`, may be None) with `save_pretrained`, atomically; returns out_dir.

    The result loads with `from_pretrained`. overwrite: replace an existing export at `out_dir`.
    subdirs: {name: anything with save_pretrained} written into out_dir/name in the same atomic move (e.g. a
    LoRA adapter beside its merged model).
    """
    model = _unwrap(model)
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"model: {type(model).__name__} has no save_pretrained; expected a transformers model")
    if tokenizer is not None and not hasattr(tokenizer, "save_pretrained"):
        raise TypeError(f"tokenizer: {type(tokenizer).__name__} has no save_pretrained")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise CheckpointError(f"{out_dir} already exists; pass overwrite=True to replace it")
    require_finite({"model": model}, out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    tmp = out_dir.parent / f"{TMP_PREFIX}{out_dir.name}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, part in (subdirs or {}).items():
            part.save_pretrained(tmp / name)
        _fsync_tree(tmp)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def require_finite(parts: Mapping[str, Any], target: str | Path) -> None:
    """Refuse (CheckpointError naming the tensor) to write ``target`` when anything in ``parts`` (name ->
    module, optimizer, state dict...) holds a NaN or inf: nothing non-finite is ever saved."""
    problem = first_nonfinite(parts)
    if problem is not None:
        raise CheckpointError(f"refusing to write {target}: {problem}; nothing non-finite is saved")


def capture_rng_state() -> dict[str, Any]:
    """The state of Python's `random`, NumPy's global RNG (if installed), torch CPU and every CUDA device.

    Plain Python values and tensors only, so it loads with torch.load(weights_only=True).
    """
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    numpy = _numpy()
    if numpy is not None:
        np_state = numpy.random.get_state(legacy=False)
        np_state["state"]["key"] = np_state["state"]["key"].tolist()
        state["numpy"] = np_state
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Undo `capture_rng_state`: later random draws repeat those made after the capture."""
    missing = [key for key in ("python", "torch") if key not in state]
    if missing:
        raise ValueError(f"rng state: missing key(s) {missing}; expected the dict from capture_rng_state()")
    random.setstate(_as_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        numpy = _numpy()
        if numpy is None:
            warnings.warn("rng state has a NumPy part but NumPy is not installed; it was not restored")
        else:
            np_state = dict(state["numpy"])
            np_state["state"] = {**np_state["state"], "key": numpy.asarray(np_state["state"]["key"], numpy.uint32)}
            numpy.random.set_state(np_state)
    if "cuda" in state:
        _restore_cuda(state["cuda"])


# --- writing ---------------------------------------------------------------------------------------


def _check_step(step: Any) -> None:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step: expected an int >= 0, got {step!r}")


def _check_state(state: CheckpointState) -> dict[str, Any]:
    """Validate names and types; returns the layout stored in meta.json."""
    for kind, parts in (("modules", state.modules), ("objects", state.objects)):
        for name in parts:
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValueError(f"{kind}: name {name!r} must be letters, digits, '_', '-' or '.' (a file name)")
    both = sorted(set(state.modules) & set(state.objects))
    if both:
        raise ValueError(f"names {both} are in both modules and objects")
    for name, module in state.modules.items():
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"modules[{name!r}]: expected an nn.Module, got {type(module).__name__}")
    for name, obj in state.objects.items():
        if isinstance(obj, torch.nn.Module):
            raise TypeError(f"objects[{name!r}] is an nn.Module: put it in modules so it is saved as safetensors")
    try:
        json.dumps(state.meta)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta: not JSON-serializable ({exc})") from None
    kinds = {name: "state_dict" if _is_stateful(obj) else "value" for name, obj in state.objects.items()}
    return {"modules": sorted(state.modules), "objects": kinds}


def _write_modules(directory: Path, modules: Mapping[str, torch.nn.Module]) -> None:
    for name, module in modules.items():
        save_model(_unwrap(module), str(directory / f"{name}.safetensors"))  # drops tied duplicates


def _write_objects(directory: Path, objects: Mapping[str, Any]) -> None:
    for name, obj in objects.items():
        torch.save(obj.state_dict() if _is_stateful(obj) else obj, directory / f"{name}.pt")


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def _is_stateful(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`; an existing `final` is swapped out first, then removed."""
    old = None
    if final.exists():
        old = final.parent / f"{TMP_PREFIX}old-{final.name}-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    """Flush every file and folder under `directory` to disk, so the rename publishes finished data."""
    for folder, _, files in os.walk(directory):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(folder))


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync elsewhere
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(root: Path, *, keep: int | None, protect: Path) -> None:
    """Delete complete checkpoints beyond the newest `keep`, and temp dirs older than the newest one."""
    if keep is not None:
        complete = complete_checkpoints(root)
        for _, path in complete[: max(len(complete) - keep, 0)]:
            if path != protect:
                _remove(path)
    newest = (protect / MARKER).stat().st_mtime  # the newest complete checkpoint: we just wrote it
    for child in root.iterdir():
        # A temp dir touched after the newest checkpoint was completed may be another save in progress.
        if child.name.startswith(TMP_PREFIX) and child.is_dir() and _last_modified(child) < newest:
            shutil.rmtree(child, ignore_errors=True)


def _remove(path: Path) -> None:
    """Rename away first, so an interrupted delete never leaves a half-deleted step_* directory."""
    doomed = path.parent / f"{TMP_PREFIX}delete-{path.name}-{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _last_modified(directory: Path) -> float:
    """Latest mtime of the folder and its entries; +inf if it vanishes meanwhile (someone else's)."""
    try:
        return max([directory.stat().st_mtime] + [child.stat().st_mtime for child in directory.iterdir()])
    except FileNotFoundError:
        return float("inf")


# --- reading ---------------------------------------------------------------------------------------


def _require_saved(path: Path, kind: str, name: str, saved: Any) -> None:
    if name not in saved:
        raise CheckpointError(f"{path} has no {kind} {name!r}; it has {sorted(saved)}")


def _load_object(path: Path, name: str, map_location: Any, weights_only: bool) -> Any:
    file = path / f"{name}.pt"
    try:
        return torch.load(file, map_location=map_location, weights_only=weights_only)
    except Exception as exc:
        if weights_only and isinstance(exc, pickle.UnpicklingError):
            raise CheckpointError(
                f"{file} holds Python objects that weights-only loading refuses; if you trust this checkpoint, "
                f"call load_checkpoint(..., weights_only=False)"
            ) from exc
        raise CheckpointError(f"{file}: cannot be loaded ({exc})") from exc


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside (Distributed)DataParallel or torch.compile; any other module as it is."""
    if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        return _unwrap(model.module)
    inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
    return _unwrap(inner) if isinstance(inner, torch.nn.Module) else model


def _as_tuples(value: Any) -> Any:
    """random.setstate needs tuples; a state that went through JSON or YAML has lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _restore_cuda(states: list[torch.Tensor]) -> None:
    if not torch.cuda.is_available():
        warnings.warn("rng state has CUDA parts but CUDA is not available; they were not restored")
        return
    count = torch.cuda.device_count()
    if len(states) != count:
        warnings.warn(f"rng state has {len(states)} CUDA device(s), this machine {count}; restoring the common ones")
    for device, device_state in enumerate(states[:count]):
        torch.cuda.set_rng_state(device_state, device)


def _numpy():
    try:
        import numpy
    except ImportError:
        return None
    return numpy
