"""Checkpoints: atomic writes, keep-K pruning, exact resume (modules, AdamW, RNG), HF export."""

import os
import random
import time

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reinforcepp.testing import tiny_model, tiny_tokenizer
from reinforcepp.train import checkpoint
from reinforcepp.train.checkpoint import (
    CheckpointError,
    CheckpointState,
    capture_rng_state,
    complete_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    save_hf_model,
)


def small_state(seed=0, **meta):
    torch.manual_seed(seed)
    return CheckpointState(modules={"net": torch.nn.Linear(3, 2)}, meta=dict(meta))


def train_steps(model, optimizer, steps, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(3, 40, (2, 6), generator=generator)
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_layout_of_a_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path, 7, small_state(note="hi"))
    assert path == tmp_path / "step_00000007"
    assert sorted(p.name for p in path.iterdir()) == ["COMPLETE", "meta.json", "net.safetensors"]
    assert latest_checkpoint(tmp_path) == path
    loaded = load_checkpoint(path)
    assert loaded.step == 7 and loaded.meta == {"note": "hi"} and loaded.objects == {}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_round_trip_resumes_training_exactly(tmp_path):
    model = tiny_model(seed=0).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    train_steps(model, optimizer, 3, seed=1)
    scheduler.step()
    state = CheckpointState(
        modules={"policy": model},  # tied embeddings: safetensors would refuse them without dedup
        objects={"optimizer": optimizer, "scheduler": scheduler, "rng": capture_rng_state()},
        meta={"consumed": 96},
    )
    path = save_checkpoint(tmp_path, 3, state)

    train_steps(model, optimizer, 2, seed=2)  # the run that was interrupted, continued
    expected = {name: p.detach().clone() for name, p in model.named_parameters()}

    resumed = tiny_model(seed=123).train()
    resumed_optimizer = torch.optim.AdamW(resumed.parameters(), lr=1e-2, weight_decay=0.1)
    resumed_scheduler = torch.optim.lr_scheduler.LambdaLR(resumed_optimizer, lambda step: 1.0 / (1 + step))
    loaded = load_checkpoint(
        path,
        modules={"policy": resumed},
        objects={"optimizer": resumed_optimizer, "scheduler": resumed_scheduler},
    )
    assert resumed.lm_head.weight is resumed.model.embed_tokens.weight  # still tied
    assert resumed_scheduler.last_epoch == 1 and resumed_optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)
    assert loaded.meta == {"consumed": 96}
    train_steps(resumed, resumed_optimizer, 2, seed=2)
    for name, param in resumed.named_parameters():
        assert torch.equal(param, expected[name]), name


def test_rng_state_round_trip(tmp_path):
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    torch.randn(3)  # move off the seed so a restore-to-seed bug would show
    save_checkpoint(tmp_path, 1, CheckpointState(objects={"rng": capture_rng_state()}))
    before = (torch.rand(4), random.random(), np.random.rand(2), torch.randn(2))

    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    loaded = load_checkpoint(latest_checkpoint(tmp_path))  # weights_only: RNG state is plain data
    restore_rng_state(loaded.objects["rng"])
    after = (torch.rand(4), random.random(), np.random.rand(2), torch.randn(2))
    assert torch.equal(before[0], after[0]) and before[1] == after[1]
    assert np.array_equal(before[2], after[2]) and torch.equal(before[3], after[3])


def test_restore_rng_state_rejects_a_foreign_dict():
    with pytest.raises(ValueError, match=r"missing key\(s\) \['python'\]"):
        restore_rng_state({"torch": torch.get_rng_state()})


def test_crash_mid_save_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    first = save_checkpoint(tmp_path, 1, small_state())

    def crash(directory, objects):
        assert (directory / "net.safetensors").is_file()  # the modules were written already
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(checkpoint, "_write_objects", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        save_checkpoint(tmp_path, 2, small_state(seed=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001"]
    assert latest_checkpoint(tmp_path) == first


def test_leftovers_of_a_killed_save_are_ignored_then_cleaned(tmp_path):
    save_checkpoint(tmp_path, 1, small_state())
    killed = tmp_path / ".tmp-step_00000002-4242-abcd"  # a process killed mid-save leaves this
    killed.mkdir()
    (killed / "net.safetensors").write_bytes(b"partial")
    incomplete = tmp_path / "step_00000003"  # no COMPLETE marker: not a checkpoint
    incomplete.mkdir()
    (incomplete / "meta.json").write_text("{}")
    old = time.time() - 3600
    for path in (killed, killed / "net.safetensors"):
        os.utime(path, (old, old))
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000001"
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_checkpoint(incomplete)

    in_progress = tmp_path / ".tmp-step_00000009-4343-beef"  # touched after the newest checkpoint
    save_checkpoint(tmp_path, 4, small_state())
    in_progress.mkdir()
    future = time.time() + 3600
    os.utime(in_progress, (future, future))
    save_checkpoint(tmp_path, 5, small_state())
    names = {p.name for p in tmp_path.iterdir()}
    assert killed.name not in names
    assert in_progress.name in names
    assert "step_00000003" in names  # not ours to delete
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000005"


def test_keep_prunes_the_oldest(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path, step * 10, small_state(), keep=2)
    assert [step for step, _ in complete_checkpoints(tmp_path)] == [40, 50]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000040", "step_00000050"]
    save_checkpoint(tmp_path, 60, small_state(), keep=None)
    assert [step for step, _ in complete_checkpoints(tmp_path)] == [40, 50, 60]


def test_the_checkpoint_just_written_is_never_pruned(tmp_path):
    for step in (10, 20):
        save_checkpoint(tmp_path, step, small_state(), keep=2)
    save_checkpoint(tmp_path, 5, small_state(), keep=1)  # e.g. after resuming from an older run
    assert [step for step, _ in complete_checkpoints(tmp_path)] == [5, 20]


def test_existing_step_needs_overwrite(tmp_path):
    save_checkpoint(tmp_path, 1, small_state(version=1))
    with pytest.raises(CheckpointError, match="already exists; pass overwrite=True"):
        save_checkpoint(tmp_path, 1, small_state(version=2))
    path = save_checkpoint(tmp_path, 1, small_state(version=2), overwrite=True)
    assert load_checkpoint(path).meta == {"version": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"step": -1}, ValueError, "step: expected an int >= 0, got -1"),
        ({"step": 1.0}, ValueError, "step: expected an int"),
        ({"keep": 0}, ValueError, "keep: expected an int >= 1 or None, got 0"),
        ({"state": {"net": torch.nn.Linear(1, 1)}}, TypeError, "state: expected a CheckpointState, got dict"),
        ({"state": CheckpointState(modules={"a/b": torch.nn.Linear(1, 1)})}, ValueError, "name 'a/b'"),
        ({"state": CheckpointState(modules={"x": "not a module"})}, TypeError, r"modules\['x'\]"),
        ({"state": CheckpointState(objects={"x": torch.nn.Linear(1, 1)})}, TypeError, "put it in modules"),
        ({"state": CheckpointState(meta={"t": torch.ones(1)})}, ValueError, "meta: not JSON-serializable"),
        (
            {"state": CheckpointState(modules={"x": torch.nn.Linear(1, 1)}, objects={"x": 1})},
            ValueError,
            r"\['x'\] are in both",
        ),
    ],
)
def test_bad_save_arguments_are_named(tmp_path, kwargs, error, match):
    arguments = {"step": 1, "state": small_state(), "keep": 3, **kwargs}
    with pytest.raises(error, match=match):
        save_checkpoint(tmp_path, arguments["step"], arguments["state"], keep=arguments["keep"])
    assert not list(tmp_path.iterdir())


def test_load_errors_name_the_part(tmp_path):
    path = save_checkpoint(tmp_path, 1, CheckpointState(modules={"net": torch.nn.Linear(3, 2)}, objects={"n": 3}))
    with pytest.raises(CheckpointError, match=r"no module 'critic'; it has \['net'\]"):
        load_checkpoint(path, modules={"critic": torch.nn.Linear(3, 2)})
    with pytest.raises(CheckpointError, match="does not fit module 'net'"):
        load_checkpoint(path, modules={"net": torch.nn.Linear(4, 2)})
    with pytest.raises(CheckpointError, match="saved as a value, not a state dict"):
        load_checkpoint(path, objects={"n": torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1)})
    assert load_checkpoint(path).objects == {"n": 3}
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_checkpoint(tmp_path / "step_00000099")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch._dynamo's import-time notices
def test_compiled_module_shares_checkpoints_with_the_bare_one(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path, 1, CheckpointState(modules={"net": torch.compile(net)}))
    fresh = torch.nn.Linear(3, 2)
    load_checkpoint(path, modules={"net": fresh})  # keys carry no "_orig_mod." prefix
    assert torch.equal(fresh.weight, net.weight)


class Custom:
    def __init__(self, value):
        self.value = value


def test_arbitrary_objects_need_weights_only_false(tmp_path):
    path = save_checkpoint(tmp_path, 1, CheckpointState(objects={"custom": Custom(7)}))
    with pytest.raises(CheckpointError, match=r"weights_only=False"):
        load_checkpoint(path)
    assert load_checkpoint(path, weights_only=False).objects["custom"].value == 7


def test_save_hf_model_reloads_identically(tmp_path):
    model = tiny_model(seed=3)
    tokenizer = tiny_tokenizer()
    out = save_hf_model(model, tokenizer, tmp_path / "final")
    assert (out / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]

    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    reloaded_tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["12+7=", "3-1="], return_tensors="pt", padding=True)
    assert reloaded_tokenizer(["12+7=", "3-1="], return_tensors="pt", padding=True)["input_ids"].tolist() == (
        batch["input_ids"].tolist()
    )
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, reloaded(**batch).logits)
    settings = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    assert torch.equal(model.generate(**batch, **settings), reloaded.generate(**batch, **settings))


def test_save_hf_model_is_atomic_and_refuses_to_clobber(tmp_path, monkeypatch):
    model, tokenizer = tiny_model(), tiny_tokenizer()
    save_hf_model(model, tokenizer, tmp_path / "final")
    with pytest.raises(CheckpointError, match="already exists; pass overwrite=True"):
        save_hf_model(model, tokenizer, tmp_path / "final")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tokenizer, "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        save_hf_model(tiny_model(seed=9), tokenizer, tmp_path / "final", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)  # the old export is intact
