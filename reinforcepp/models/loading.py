"""Load tokenizers and models from a hub id, a local directory or a GGUF file.

This is the package's edge to `transformers`: everything else gets plain `torch.nn.Module`s and
tokenizers from here. Errors name the path and what was tried, so a typo in a config does not
surface as a hub connection error three layers down.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import re
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import SafetensorError

from .safetensors_file import safetensors_problem

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# A hub id is "name" or "namespace/name" (letters, digits, '-', '_', '.'); anything else is a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message names the path and what was tried."""


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    """"auto" is float32 on CPU and bfloat16 on CUDA; "float32" and "bfloat16" are taken as given."""
    try:
        device_type = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: {device!r} is not a torch device ({exc})") from None
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device_type == "cuda" else torch.float32
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype: expected 'auto', 'float32' or 'bfloat16', got {dtype!r}")


def check_device(device: str | torch.device) -> None:
    """Fail before loading anything when the device cannot be used here."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {str(device)!r} was asked for, but CUDA is not available on this machine")


def load_tokenizer(path: str | Path, *, gguf_file: str | None = None, trust_remote_code: bool = False):
    """A tokenizer that pads on the left (generation) and always has a pad token (EOS if it had none)."""
    tokenizer = load_pretrained(
        transformers.AutoTokenizer, path, what="tokenizer", gguf_file=gguf_file, trust_remote_code=trust_remote_code
    )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(
                f"tokenizer from {str(path)!r} has neither a pad token nor an EOS token; "
                "batched generation needs one: add a pad token to the tokenizer and save it again"
            )
        log.info("tokenizer from %r has no pad token; padding with its EOS token %r", str(path), tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_causal_lm(
    path: str | Path,
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "cpu",
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
) -> torch.nn.Module:
    """A causal LM in eval mode (RL runs without dropout) on `device`.

    A GGUF file is dequantized by transformers into a model that refuses `save_pretrained`; it is
    rebuilt here as a plain model with the same weights, so checkpoints and exports work as usual.
    """
    torch_dtype = resolve_dtype(dtype, device)
    check_device(device)
    model = load_pretrained(
        transformers.AutoModelForCausalLM,
        path,
        what="causal LM",
        gguf_file=gguf_file,
        trust_remote_code=trust_remote_code,
        dtype=torch_dtype,
    )
    if gguf_file is not None:
        model = _rebuild_without_quantizer(model)
    return model.to(device=device, dtype=torch_dtype).eval()


def load_reference(
    path: str | Path,
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "cpu",
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
) -> torch.nn.Module:
    """`load_causal_lm`, frozen: the KL reference is never trained."""
    model = load_causal_lm(
        path, dtype=dtype, device=device, gguf_file=gguf_file, trust_remote_code=trust_remote_code
    )
    return model.requires_grad_(False)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``model``'s weights (same dtype, device, tied weights): the KL reference taken from the
    policy just loaded, without reading (and, for a GGUF file, dequantizing) the checkpoint a second time."""
    return copy.deepcopy(model).requires_grad_(False).eval()


def in_dtype(model: torch.nn.Module, dtype: str) -> torch.nn.Module:
    """``model`` itself when its weights are already ``dtype`` ("auto": as they are), else a copy with its
    floating-point parameters in ``dtype``, cast one tensor at a time: the peak is the model plus the copy in
    ``dtype``, never a second full-precision copy (tied weights stay tied)."""
    target = DTYPES.get(dtype)
    params = [p for p in model.parameters() if p.is_floating_point()]
    if target is None or all(p.dtype == target for p in params):
        return model
    memo = {id(p): torch.nn.Parameter(p.detach().to(target), requires_grad=False) for p in params}
    return copy.deepcopy(model, memo)


def load_pretrained(auto_class: Any, path: str | Path, *, what: str, gguf_file: str | None = None, **kwargs: Any):
    """`auto_class.from_pretrained(path, ...)` with the failures turned into a readable ModelLoadError."""
    where = _classify_source(path, gguf_file)
    if gguf_file is not None:
        _require_gguf_support(gguf_file)
        kwargs["gguf_file"] = gguf_file
    elif where == "local directory" and auto_class is not transformers.AutoTokenizer:
        _require_config(Path(path).expanduser(), what)
        _require_whole_weights(Path(path).expanduser(), what)
    source = str(Path(path).expanduser()) if where == "local directory" else str(path)
    try:
        return auto_class.from_pretrained(source, **kwargs)
    except (OSError, ValueError, SafetensorError) as exc:
        if where == "hub id":
            tried = (
                f"it is not a local directory, so it was tried as a hub id (offline mode: "
                f"{_offline_mode()}), and that failed"
            )
        else:
            tried = "it is a local directory, but transformers could not load it"
        raise ModelLoadError(f"could not load the {what} from {str(path)!r}: {tried}: {exc}") from exc


def _classify_source(path: str | Path, gguf_file: str | None) -> str:
    """"local directory" or "hub id"; raises ModelLoadError for anything that can be neither."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise ModelLoadError(f"model path: expected a hub id or a directory, got {path!r}")
    local = Path(path).expanduser()
    if local.is_dir():
        if gguf_file is not None and not (local / gguf_file).is_file():
            present = sorted(p.name for p in local.glob("*.gguf")) or "none"
            raise ModelLoadError(f"gguf_file {gguf_file!r} is not in {str(path)!r} (.gguf files there: {present})")
        return "local directory"
    if local.exists():
        hint = f"; for a GGUF file pass its directory and gguf_file={local.name!r}" if local.suffix == ".gguf" else ""
        raise ModelLoadError(f"{str(path)!r} is a file; expected a model directory or a hub id{hint}")
    if _HUB_ID.match(str(path)) and ".." not in str(path):
        return "hub id"
    raise ModelLoadError(
        f"{str(path)!r}: no such local directory, and it is not a hub id ('name' or 'org/name'), "
        "so the hub was not tried"
    )


def _require_config(directory: Path, what: str) -> None:
    # Without this check transformers reports a missing config.json as a config lacking `model_type`.
    if not (directory / "config.json").is_file():
        ggufs = sorted(p.name for p in directory.glob("*.gguf"))
        hint = f"; it has GGUF file(s) {ggufs}: pass one as gguf_file=" if ggufs else ""
        raise ModelLoadError(
            f"could not load the {what} from {str(directory)!r}: it is a local directory without config.json{hint}"
        )


def _require_whole_weights(directory: Path, what: str) -> None:
    # A truncated or empty weights file would otherwise fail inside safetensors with no file named.
    for file in sorted(directory.glob("*.safetensors")):
        problem = safetensors_problem(file)
        if problem is not None:
            raise ModelLoadError(f"could not load the {what} from {str(directory)!r}: {problem}")


def _require_gguf_support(gguf_file: str) -> None:
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelLoadError(
            f"loading gguf_file {gguf_file!r} needs the package(s) {', '.join(missing)}: "
            f"pip install {' '.join(missing)}"
        )


def _offline_mode() -> bool:
    import huggingface_hub.constants

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _rebuild_without_quantizer(model: torch.nn.Module) -> torch.nn.Module:
    """The same weights in a fresh model of the same class, with no GGUF quantizer attached."""
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        # Saved into config.json, it would make the export load through the GGUF quantizer again.
        del config.quantization_config
    with _skip_weight_init():  # every weight is overwritten next; a random init would cost seconds
        plain = type(model)(config)
    plain.tie_weights()  # skipped along with the init
    plain.load_state_dict(model.state_dict())  # strict: every weight comes from the GGUF model
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain


def _skip_weight_init():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers: initialize, only slower
        return contextlib.nullcontext()
    return no_init_weights()
