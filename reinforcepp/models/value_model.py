"""A transformer with a scalar head: PPO's critic and a Bradley-Terry reward model.

The backbone is the causal LM's base model (no LM head). The head maps each position's last hidden
state to one value. As a reward model, the sequence's score is the value at its last non-pad token
(OpenRLHF's convention), so left and right padding give the same score.

On disk (`save_pretrained`): the backbone in HF format (config.json + model.safetensors), the head in
`value_head.safetensors`, and `value_model.json` with the head's name and the reward-normalization
mean and std.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file
from torch import nn

from reinforcepp.algos.masked import last_token_index
from reinforcepp.models import inputs
from reinforcepp.models.loading import (
    ModelLoadError,
    check_device,
    load_causal_lm,
    load_pretrained,
    resolve_dtype,
)

HEAD_NAME = "value_head"
HEAD_FILE = "value_head.safetensors"
META_FILE = "value_model.json"
HEAD_INITS = ("normal", "zeros")


class ValueModel(nn.Module):
    """Backbone + `value_head = Linear(hidden, 1, bias=False)`, with `mean`/`std` buffers (saved)."""

    def __init__(self, backbone: nn.Module, *, init_head: str = "normal") -> None:
        super().__init__()
        self.backbone = backbone
        self.hidden_size = _hidden_size(backbone)
        self.value_head = nn.Linear(self.hidden_size, 1, bias=False)
        self.init_head(init_head)
        reference = next(backbone.parameters())
        self.value_head.to(device=reference.device, dtype=reference.dtype)
        # Reward-normalization statistics (set when the reward model is trained); 0/1 = identity.
        self.register_buffer("mean", torch.zeros((), device=reference.device))
        self.register_buffer("std", torch.ones((), device=reference.device))

    def init_head(self, how: str = "normal") -> None:
        """Re-initialize the head: "normal" (OpenRLHF: std = 1 / (hidden + 1)) or "zeros"."""
        if how == "normal":
            nn.init.normal_(self.value_head.weight, mean=0.0, std=1.0 / (self.hidden_size + 1))
        elif how == "zeros":
            nn.init.zeros_(self.value_head.weight)
        else:
            raise ValueError(f"init_head: expected one of {HEAD_INITS}, got {how!r}")

    def set_normalization(self, mean: float, std: float) -> None:
        """Store the reward statistics that `normalize=True` divides out."""
        if not math.isfinite(mean):
            raise ValueError(f"mean: must be finite, got {mean}")
        if not (math.isfinite(std) and std > 0):
            raise ValueError(f"std: must be finite and > 0, got {std}")
        self.mean.fill_(mean)
        self.std.fill_(std)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        *,
        normalize: bool = False,
    ) -> torch.Tensor:
        """Values [B, L] in float32, one per position.

        input_ids, attention_mask: [B, L] (mask 1 = token, 0 = pad; any padding side).
        position_ids: [B, L]; by default counted over real tokens only, so left padding does not
        shift positions. normalize: return (value - mean) / std.
        """
        _check_batch(input_ids, attention_mask)
        if position_ids is None:
            position_ids = inputs.position_ids(attention_mask)
        elif position_ids.shape != input_ids.shape:
            raise ValueError(f"position_ids: shape {tuple(position_ids.shape)} != input_ids {tuple(input_ids.shape)}")
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # [B, L, H]
        # a new tensor, not a view of the head's output: FSDP2 cannot hook a view's in-place changes (and warns)
        values = self.value_head(hidden).squeeze(-1).float().clone()  # [B, L]
        if normalize:
            values = (values - self.mean) / self.std
        return values

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, normalize: bool = False) -> torch.Tensor:
        """Reward [B] (float32): the value at each sequence's last non-pad token."""
        values = self(input_ids, attention_mask, normalize=normalize)  # [B, L]
        return values.gather(1, last_token_index(attention_mask).unsqueeze(1)).squeeze(1)

    def save_pretrained(self, out_dir: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write the backbone (HF safetensors), the head and `value_model.json` to `out_dir`; ``state_dict``
        (this module's keys) replaces the module's own tensors, e.g. full weights gathered from shards."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        prefix = "backbone."
        backbone = None if state_dict is None else {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        self.backbone.save_pretrained(out_dir, state_dict=backbone)
        head = self.value_head.weight if state_dict is None else state_dict[f"{HEAD_NAME}.weight"]
        save_file({f"{HEAD_NAME}.weight": head.detach().contiguous().cpu()}, out_dir / HEAD_FILE)
        meta = {"head": HEAD_NAME, "hidden_size": self.hidden_size, "mean": self.mean.item(), "std": self.std.item()}
        (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: str | torch.dtype = "auto",
        device: str | torch.device = "cpu",
        init_head: str = "normal",
        gguf_file: str | None = None,
        trust_remote_code: bool = False,
    ) -> ValueModel:
        """Load a directory written by `save_pretrained`, or build a fresh head on a causal LM's backbone.

        A directory with `value_model.json` is a saved ValueModel (init_head is then unused); anything
        else is read as a causal-LM checkpoint (hub id, directory or GGUF) whose LM head is dropped.
        """
        if init_head not in HEAD_INITS:
            raise ValueError(f"init_head: expected one of {HEAD_INITS}, got {init_head!r}")
        torch_dtype = resolve_dtype(dtype, device)
        check_device(device)
        if (Path(path) / META_FILE).is_file():
            return cls._load_saved(Path(path), torch_dtype, device, trust_remote_code)
        lm = load_causal_lm(
            path, dtype=torch_dtype, device=device, gguf_file=gguf_file, trust_remote_code=trust_remote_code
        )
        return cls(lm.base_model, init_head=init_head).eval()

    @classmethod
    def _load_saved(cls, path: Path, dtype: torch.dtype, device, trust_remote_code: bool) -> ValueModel:
        meta = _read_meta(path)
        backbone = load_pretrained(
            transformers.AutoModel, path, what="value-model backbone", dtype=dtype, trust_remote_code=trust_remote_code
        )
        model = cls(backbone.to(device), init_head="zeros")
        if meta["hidden_size"] != model.hidden_size:
            raise ModelLoadError(
                f"{path / META_FILE}: hidden_size {meta['hidden_size']} != backbone's {model.hidden_size}"
            )
        weight = load_file(path / HEAD_FILE).get(f"{meta['head']}.weight")
        if weight is None or tuple(weight.shape) != (1, model.hidden_size):
            got = "missing" if weight is None else f"shape {tuple(weight.shape)}"
            raise ModelLoadError(
                f"{path / HEAD_FILE}: expected tensor {meta['head']}.weight of shape (1, {model.hidden_size}), {got}"
            )
        with torch.no_grad():
            model.value_head.weight.copy_(weight)
        model.set_normalization(meta["mean"], meta["std"])
        return model.eval()


def _check_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids: expected shape [B, L], got {tuple(input_ids.shape)}")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask: shape {tuple(attention_mask.shape)} != input_ids {tuple(input_ids.shape)}"
        )


def _hidden_size(backbone: nn.Module) -> int:
    config = getattr(backbone, "config", None)
    if config is None:
        raise TypeError(f"backbone: expected a transformers model with a config, got {type(backbone).__name__}")
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text_config.hidden_size)


def _read_meta(path: Path) -> dict:
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{meta_path}: not valid JSON ({exc})") from exc
    missing = [key for key in ("head", "hidden_size", "mean", "std") if key not in meta]
    if missing:
        raise ModelLoadError(f"{meta_path}: missing key(s) {missing}")
    if not (path / HEAD_FILE).is_file():
        raise ModelLoadError(f"{path}: has {META_FILE} but no {HEAD_FILE}")
    return meta
