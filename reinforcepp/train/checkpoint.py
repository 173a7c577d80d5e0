"""Atomic, resumable checkpoints for the RL loop, RNG state, and the final Hugging Face export.

A checkpoint is a directory `root/step_00000042/` holding:
    {name}.safetensors  one per module: its state dict (tied weights stored once)
    {name}.pt           one per object: an optimizer's/scheduler's state dict, or the object itself
    meta.json           {"step", "modules", "objects", "meta", "sha256"}: the layout, the caller's metadata and
                        the SHA-256 of every other file (verified on load: a damaged file is named, not loaded)
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

import errno
import hashlib
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
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from reinforcepp.models.safetensors_file import safetensors_problem

from .finite import first_nonfinite

CHECKPOINTS = "checkpoints"  # a run directory's folder of checkpoints
MARKER = "COMPLETE"
META_FILE = "meta.json"
TMP_PREFIX = ".tmp-"
_STEP_DIR = re.compile(r"^step_(\d+)$")
# what save_checkpoint/save_hf_model name their temp dirs: .tmp-<name>-<pid>-<8 hex digits>
_OUR_TMP = re.compile(rf"^{re.escape(TMP_PREFIX)}.+-(\d+)-[0-9a-f]{{8}}$")
_DISK_FULL_BYTES = 1 << 20  # a write failed with less than this free: the disk was full
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
    try:
        tmp.mkdir()
        _write_modules(tmp, state.modules)
        _write_objects(tmp, state.objects)
        _write_json(tmp / META_FILE, {"step": step, **layout, "meta": state.meta, "sha256": file_checksums(tmp)})
        _write_json(tmp / MARKER, {"step": step})  # last: it is what makes the checkpoint complete
        _fsync_tree(tmp)
        _move_into_place(tmp, final)
    except BaseException as exc:
        error = write_error(exc, final)  # before the temp dir goes: a full disk is seen while it is full
        shutil.rmtree(tmp, ignore_errors=True)
        if error is not None:
            raise error from exc
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
    verify: bool = True,
) -> LoadedCheckpoint:
    """Restore `modules` (strict) and stateful `objects` in place from the checkpoint at `path`.

    Returns every saved object and the metadata. weights_only=False is needed only for objects that
    are arbitrary Python classes; it unpickles code, so use it on checkpoints you trust. verify: check
    every file against its checksum first (False: the caller just did, with `checkpoint_problem`).
    Loaded weights must be finite.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if not (path / MARKER).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER} file)")
    layout = read_layout(path)
    if verify:
        require_intact(path)

    for name, module in (modules or {}).items():
        _require_saved(path, "module", name, layout["modules"])
        file = path / f"{name}.safetensors"
        try:
            load_model(_unwrap(module), file, strict=True)
        except (RuntimeError, SafetensorError) as exc:
            raise CheckpointError(f"{file} does not fit module {name!r}: {exc}") from exc
        _require_finite(_unwrap(module), file)

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
    except BaseException as exc:
        error = write_error(exc, out_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        if error is not None:
            raise error from exc
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


def write_error(exc: BaseException, target: Path) -> CheckpointError | None:
    """One line for a save that failed for want of room or permission (disk full, read-only file system),
    which the libraries report each their own way; None for any other failure (a bug keeps its traceback)."""
    if not isinstance(exc, (OSError, RuntimeError, SafetensorError)):
        return None
    no_space = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(exc)
    if no_space or _free_bytes(target.parent) < _DISK_FULL_BYTES:
        return CheckpointError(f"disk full: could not write {target} ({_free_bytes(target.parent)} bytes free on "
                               f"its file system); earlier checkpoints are intact")
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return CheckpointError(f"could not write {target}: {exc.strerror} ({exc.filename or target.parent})")
    return None


def _free_bytes(directory: Path) -> int:
    try:
        stats = os.statvfs(directory)
    except OSError:  # the directory is gone or unreachable: say nothing about room
        return _DISK_FULL_BYTES
    return stats.f_bavail * stats.f_frsize


def file_checksums(directory: Path) -> dict[str, str]:
    """{relative path: SHA-256} of every file under `directory` (meta.json and the marker excepted: they
    are written after, and hold the checksums)."""
    return {
        file.relative_to(directory).as_posix(): sha256_of(file)
        for file in sorted(directory.rglob("*"))
        if file.is_file() and file.name not in (META_FILE, MARKER)
    }


def sha256_of(file: Path) -> str:
    with file.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


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


def read_layout(path: Path) -> dict[str, Any]:
    """A checkpoint's meta.json."""
    try:
        layout = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / META_FILE}: cannot be read ({exc})") from exc
    if not isinstance(layout, dict) or not {"step", "modules", "objects"} <= set(layout):
        raise CheckpointError(f"{path / META_FILE}: not a checkpoint layout (damaged or edited)")
    return layout


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be trusted (a file missing, changed since the save, or a
    truncated weights file in a checkpoint older than checksums), or None."""
    path = Path(path)
    try:
        expected = read_layout(path).get("sha256")
    except CheckpointError as exc:
        return str(exc)
    if expected is None:  # written before checksums: at least the weights files must be whole
        return next(filter(None, map(safetensors_problem, sorted(path.glob("*.safetensors")))), None)
    for name, digest in expected.items():
        file = path / name
        if not file.is_file():
            return f"{file}: missing"
        problem = safetensors_problem(file) if file.suffix == ".safetensors" else None  # says how: truncated...
        if problem is not None:
            return problem
        if sha256_of(file) != digest:
            return f"{file}: checksum mismatch (the file changed after it was saved: damaged)"
    return None


def require_intact(path: Path) -> None:
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(problem)


def _require_finite(module: torch.nn.Module, file: Path) -> None:
    problem = first_nonfinite({"tensor": module})
    if problem:
        raise CheckpointError(f"{file}: {problem}")


def remove_stale_temp_dirs(directory: Path) -> list[Path]:
    """Remove the temp dirs an interrupted save left in `directory`: ours only (named as our saves name
    them) and of no other running process. Call it before this process saves anything: a dir named with
    its own pid is then stale too (the pid was reused after the crash). Returns what was removed."""
    if not directory.is_dir():
        return []
    removed = []
    for child in sorted(directory.iterdir()):
        match = _OUR_TMP.match(child.name)
        pid = int(match.group(1)) if match else None
        if pid is not None and child.is_dir() and (pid == os.getpid() or not _process_alive(pid)):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


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
