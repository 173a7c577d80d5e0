"""Fixtures every test folder may use: one tiny local model and a small prompt file per session."""

import json

import pytest

from reinforcepp.testing import save_tiny_checkpoint

PROMPTS = ["ab", "hello", "12+3=", "say a", "x", "what is 7?", "go", "count: 1 2"]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random Llama and its character tokenizer, saved like a hub model."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "label": str(i)}) + "\n" for i, p in enumerate(PROMPTS)))
    return path
