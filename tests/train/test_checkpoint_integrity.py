"""Checkpoint integrity: every file's checksum in meta.json and verified on load, whole safetensors files,
finite weights, stale temp dirs of killed saves, and a full disk while saving."""

import errno
import hashlib
import json
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file

from reinforcepp.models.safetensors_file import safetensors_problem
from reinforcepp.train import checkpoint
from reinforcepp.train.checkpoint import (
    CheckpointError,
    CheckpointState,
    checkpoint_problem,
    load_checkpoint,
    remove_stale_temp_dirs,
    save_checkpoint,
    save_hf_model,
)


def state(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Linear(16, 8)
    optimizer = torch.optim.AdamW(net.parameters())
    net(torch.randn(2, 16)).sum().backward()
    optimizer.step()
    return CheckpointState(modules={"net": net}, objects={"opt": optimizer, "note": {"k": 1}})


def overwrite_middle(path, data=b"\xff" * 32):
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(data)


def test_meta_holds_the_sha256_of_every_other_file(tmp_path):
    path = save_checkpoint(tmp_path, 1, state())
    sums = json.loads((path / "meta.json").read_text())["sha256"]
    assert sorted(sums) == sorted(p.name for p in path.iterdir() if p.name not in ("meta.json", "COMPLETE"))
    for name, digest in sums.items():
        assert hashlib.sha256((path / name).read_bytes()).hexdigest() == digest
    assert checkpoint_problem(path) is None


@pytest.mark.parametrize("name", ["net.safetensors", "opt.pt", "note.pt"])
def test_32_bytes_of_0xff_anywhere_are_detected(tmp_path, name):
    path = save_checkpoint(tmp_path, 1, state())
    overwrite_middle(path / name)
    with pytest.raises(CheckpointError, match=f"{path / name}: checksum mismatch"):
        load_checkpoint(path, modules={"net": state().modules["net"]})


def test_a_missing_file_is_named(tmp_path):
    path = save_checkpoint(tmp_path, 1, state())
    (path / "opt.pt").unlink()
    assert checkpoint_problem(path) == f"{path / 'opt.pt'}: missing"


def test_verify_false_skips_the_checksums(tmp_path):
    """For a caller that just verified them (resume does, while choosing the checkpoint)."""
    path = save_checkpoint(tmp_path, 1, state())
    meta = json.loads((path / "meta.json").read_text())
    meta["sha256"]["note.pt"] = "0" * 64
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="note.pt: checksum mismatch"):
        load_checkpoint(path)
    assert load_checkpoint(path, verify=False).objects["note"] == {"k": 1}


def test_a_checkpoint_older_than_checksums_loads_and_its_weights_are_still_checked(tmp_path):
    path = save_checkpoint(tmp_path, 1, state())
    meta = json.loads((path / "meta.json").read_text())
    del meta["sha256"]
    (path / "meta.json").write_text(json.dumps(meta))
    net = torch.nn.Linear(16, 8)
    load_checkpoint(path, modules={"net": net})
    assert torch.equal(net.weight, state().modules["net"].weight)
    os.truncate(path / "net.safetensors", 50)
    assert "truncated" in checkpoint_problem(path)


def test_non_finite_weights_are_refused_on_load(tmp_path):
    path = save_checkpoint(tmp_path, 1, CheckpointState(modules={"net": torch.nn.Linear(4, 2)}))
    # an inf written as a save without the finite check would have: the checksums match, the values do not
    weights = load_file(path / "net.safetensors")
    weights["bias"][1] = float("inf")
    save_file(weights, path / "net.safetensors")
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "sha256": checkpoint.file_checksums(path)}))
    with pytest.raises(CheckpointError, match=r"net.safetensors: tensor.bias holds 1 non-finite"):
        load_checkpoint(path, modules={"net": torch.nn.Linear(4, 2)})


def test_safetensors_problem_names_how_a_file_is_broken(tmp_path):
    file = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(100, dtype=torch.float32)}, file)
    size = file.stat().st_size
    assert safetensors_problem(file) is None
    header_end = 8 + int.from_bytes(file.read_bytes()[:8], "little")
    for cut, says in [(0, "empty file"), (5, "truncated"), (header_end - 1, "truncated"), (size - 1, "truncated")]:
        os.truncate(file, cut)
        assert says in safetensors_problem(file), cut
        save_file({"a": torch.arange(100, dtype=torch.float32)}, file)
    file.write_bytes((20).to_bytes(8, "little") + b"\xff" * 20 + b"\x00" * 400)
    assert "damaged header" in safetensors_problem(file)


def test_stale_temp_dirs_of_dead_processes_are_removed(tmp_path):
    dead = _pid_of_a_finished_process()
    live = os.getppid()
    stale = tmp_path / f".tmp-final-{dead}-0123abcd"
    mine = tmp_path / f".tmp-step_00000003-{os.getpid()}-89abcdef"  # a reused pid: at start-up, stale too
    running = tmp_path / f".tmp-step_00000004-{live}-00000000"
    not_ours = tmp_path / ".tmp-something-else"
    for folder in (stale, mine, running, not_ours):
        folder.mkdir()
    assert remove_stale_temp_dirs(tmp_path) == [stale, mine]
    assert running.is_dir() and not_ours.is_dir()


def _pid_of_a_finished_process() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_full_disk_while_saving_is_one_clear_error_and_keeps_the_earlier_checkpoint(tmp_path, monkeypatch):
    first = save_checkpoint(tmp_path, 1, state())

    def no_space(obj, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(checkpoint.torch, "save", no_space)
    with pytest.raises(CheckpointError, match=f"disk full: could not write {tmp_path / 'step_00000002'}"):
        save_checkpoint(tmp_path, 2, state())
    assert checkpoint_problem(first) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001"]


def test_a_full_disk_during_the_final_export_is_one_clear_error(tmp_path, monkeypatch):
    from reinforcepp.testing import tiny_model

    def no_space(self, directory, *args, **kwargs):
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    model = tiny_model(hidden=16, layers=1)
    monkeypatch.setattr(type(model), "save_pretrained", no_space)
    with pytest.raises(CheckpointError, match=f"disk full: could not write {tmp_path / 'final'}"):
        save_hf_model(model, None, tmp_path / "final")
    assert list(tmp_path.iterdir()) == []


def test_other_save_failures_keep_their_traceback(tmp_path, monkeypatch):
    """Only want of room or permission becomes a one-line error: a bug stays a bug."""

    def broken(obj, path, *args, **kwargs):
        raise TypeError("cannot pickle this")

    monkeypatch.setattr(checkpoint.torch, "save", broken)
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path, 1, state())


def test_sharded_checkpoints_carry_checksums_too(tmp_path):
    """A DCP checkpoint (written here by one process, as torchrun's rank 0 would finish it)."""
    from reinforcepp.train.sharded_checkpoint import load_sharded, save_sharded

    parts = state()
    trainables = {"net": (parts.modules["net"], parts.objects["opt"])}
    path = save_sharded(tmp_path, 1, trainables, {}, keep=2)
    sums = json.loads((path / "meta.json").read_text())["sha256"]
    assert "sharded/.metadata" in sums and any(name.endswith(".distcp") for name in sums)
    assert load_sharded(path, trainables, {}) == 1
    shard = next(path.glob("sharded/*.distcp"))
    overwrite_middle(shard)
    with pytest.raises(CheckpointError, match=f"{shard}: checksum mismatch"):
        load_sharded(path, trainables, {})
