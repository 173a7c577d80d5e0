"""Model inputs, one owner: padding, position ids, the last valid token and the Llama-family test, by hand."""

import pytest
import torch

from reinforcepp.algos.advantages import last_token_mask
from reinforcepp.models.inputs import is_llama_family, left_pad, position_ids, right_pad
from reinforcepp.testing import tiny_model


def test_left_and_right_padding_by_hand():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = right_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_position_ids_count_real_tokens_on_either_side():
    # a left-padded prompt followed by a right-padded response, as the trainer feeds [prompt | response]
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    assert position_ids(mask).tolist() == [[1, 0, 1, 2, 1], [0, 1, 1, 1, 1]]


def test_last_token_mask_marks_the_last_valid_token_and_nothing_in_an_empty_row():
    mask = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 0, 0]])  # a hole, and a row that left the update
    assert last_token_mask(mask).int().tolist() == [[0, 1, 0], [0, 0, 1], [0, 0, 0]]


def test_llama_family_is_read_from_the_config():
    from transformers import GPT2Config, GPT2LMHeadModel

    assert is_llama_family(tiny_model(16, hidden=16, layers=1, heads=2))
    assert not is_llama_family(GPT2LMHeadModel(GPT2Config(vocab_size=16, n_embd=16, n_layer=1, n_head=2)))
    assert not is_llama_family(torch.nn.Linear(2, 2))  # no config: e.g. a DDP wrapper
