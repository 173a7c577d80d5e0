"""ValueModel: shapes, head init, last-token scores under any padding, save/load, building from a causal LM."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from reinforcepp.models.loading import ModelLoadError
from reinforcepp.algos.masked import last_token_index
from reinforcepp.models.inputs import position_ids as positions_from_mask
from reinforcepp.models.value_model import ValueModel
from reinforcepp.testing import tiny_model

PAD = 0


@pytest.fixture(scope="module")
def value_model(tiny_dir):
    torch.manual_seed(0)
    return ValueModel.from_pretrained(tiny_dir)


def pad(rows, side):
    """input_ids, attention_mask [B, L] for token lists padded on `side`."""
    length = max(map(len, rows))
    ids, mask = [], []
    for row in rows:
        fill = [PAD] * (length - len(row))
        ones, zeros = [1] * len(row), [0] * len(fill)
        ids.append(fill + row if side == "left" else row + fill)
        mask.append(zeros + ones if side == "left" else ones + zeros)
    return torch.tensor(ids), torch.tensor(mask)


ROWS = [[5, 9, 12, 7], [8, 3], [4, 4, 6, 11, 20, 13]]


def test_values_have_one_float32_scalar_per_position(value_model):
    ids, mask = pad(ROWS, "right")
    with torch.no_grad():
        values = value_model(ids, mask)
    assert values.shape == ids.shape
    assert values.dtype == torch.float32


def test_values_stay_float32_for_a_bfloat16_backbone(tiny_dir):
    model = ValueModel.from_pretrained(tiny_dir, dtype="bfloat16")
    assert model.value_head.weight.dtype == torch.bfloat16
    ids, mask = pad(ROWS, "left")
    with torch.no_grad():
        assert model(ids, mask).dtype == torch.float32


def test_fresh_head_is_normal_with_std_one_over_hidden_plus_one():
    hidden = 512
    backbone = tiny_model(hidden=hidden, layers=1, heads=4).model
    torch.manual_seed(0)
    weight = ValueModel(backbone).value_head.weight
    assert weight.shape == (1, hidden)
    expected = 1.0 / (hidden + 1)
    # 512 draws estimate the std within a few percent; PyTorch's default Linear init is ~13x larger.
    assert weight.std().item() == pytest.approx(expected, rel=0.15)
    assert weight.mean().abs().item() < 4 * expected / hidden**0.5


def test_zeros_head_and_unknown_init(tiny_dir):
    assert torch.count_nonzero(ValueModel.from_pretrained(tiny_dir, init_head="zeros").value_head.weight) == 0
    with pytest.raises(ValueError, match="init_head: .*'xavier'"):
        ValueModel.from_pretrained(tiny_dir, init_head="xavier")


@pytest.mark.parametrize("side", ["left", "right"])
def test_score_is_the_value_at_the_last_real_token(value_model, side):
    ids, mask = pad(ROWS, side)
    with torch.no_grad():
        scores = value_model.score(ids, mask)
        alone = [value_model(torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long))[0, -1] for row in ROWS]
    assert scores.shape == (len(ROWS),)
    torch.testing.assert_close(scores, torch.stack(alone), atol=1e-5, rtol=1e-5)


def test_left_and_right_padding_give_the_same_scores(value_model):
    with torch.no_grad():
        left = value_model.score(*pad(ROWS, "left"))
        right = value_model.score(*pad(ROWS, "right"))
    torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-5)
    assert left.unique().numel() == len(ROWS)  # distinct rows, so a wrong index would show


def test_last_token_index_any_layout():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0]])
    assert last_token_index(mask).tolist() == [3, 1, 3, 1]
    with pytest.raises(ValueError, match=r"rows \[1\] have no tokens"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))


def test_positions_count_real_tokens_only(value_model, monkeypatch):
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    expected = torch.tensor([[1, 1, 0, 1, 2], [0, 1, 2, 1, 1]])
    assert torch.equal(positions_from_mask(mask), expected)
    # RoPE is shift-invariant, so the outputs alone cannot show this: spy on what the backbone gets.
    seen = {}
    forward = value_model.backbone.forward
    monkeypatch.setattr(value_model.backbone, "forward", lambda **kw: seen.update(kw) or forward(**kw))
    with torch.no_grad():
        value_model(torch.full_like(mask, 5), mask)
    assert torch.equal(seen["position_ids"], expected)


def test_bad_shapes_are_named(value_model):
    ids, mask = pad(ROWS, "left")
    with pytest.raises(ValueError, match="attention_mask: shape"):
        value_model(ids, mask[:, 1:])
    with pytest.raises(ValueError, match="input_ids: expected shape"):
        value_model(ids[0], mask[0])
    with pytest.raises(ValueError, match="position_ids: shape"):
        value_model(ids, mask, position_ids=torch.zeros(1, 2, dtype=torch.long))


def test_normalization_uses_the_stored_mean_and_std(tiny_dir):
    model = ValueModel.from_pretrained(tiny_dir)
    ids, mask = pad(ROWS, "left")
    model.set_normalization(mean=0.5, std=2.0)
    with torch.no_grad():
        raw, normalized = model.score(ids, mask), model.score(ids, mask, normalize=True)
    torch.testing.assert_close(normalized, (raw - 0.5) / 2.0)
    with pytest.raises(ValueError, match="std: must be finite and > 0"):
        model.set_normalization(mean=0.0, std=0.0)


def test_save_and_load_round_trip(tmp_path, tiny_dir):
    torch.manual_seed(1)
    model = ValueModel.from_pretrained(tiny_dir)
    model.set_normalization(mean=-1.25, std=3.5)
    model.save_pretrained(tmp_path / "vm")

    names = {p.name for p in (tmp_path / "vm").iterdir()}
    assert {"config.json", "model.safetensors", "value_head.safetensors", "value_model.json"} <= names
    meta = json.loads((tmp_path / "vm" / "value_model.json").read_text())
    assert meta == {"head": "value_head", "hidden_size": 64, "mean": -1.25, "std": 3.5}

    loaded = ValueModel.from_pretrained(tmp_path / "vm", init_head="normal")  # init_head unused here
    assert not loaded.training
    ids, mask = pad(ROWS, "left")
    with torch.no_grad():
        assert torch.equal(model(ids, mask), loaded(ids, mask))
        assert torch.equal(model.score(ids, mask, normalize=True), loaded.score(ids, mask, normalize=True))
    assert loaded.state_dict().keys() == model.state_dict().keys()


def test_built_from_a_causal_lm_takes_its_backbone_and_drops_the_lm_head(tiny_dir):
    lm = AutoModelForCausalLM.from_pretrained(tiny_dir)
    model = ValueModel.from_pretrained(tiny_dir)
    backbone = dict(model.backbone.named_parameters())
    for name, param in lm.model.named_parameters():
        assert torch.equal(backbone[name], param), name
    assert not any("lm_head" in name for name, _ in model.named_parameters())
    assert set(dict(model.named_parameters())) == {f"backbone.{n}" for n in backbone} | {"value_head.weight"}
    assert model.mean.item() == 0.0 and model.std.item() == 1.0


def test_corrupt_saved_head_is_reported(tmp_path, value_model):
    value_model.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "value_model.json").read_text())
    (tmp_path / "value_model.json").write_text(json.dumps({**meta, "head": "score"}))
    with pytest.raises(ModelLoadError, match=r"value_head.safetensors: expected tensor score.weight"):
        ValueModel.from_pretrained(tmp_path)
