"""The fast path of the sampler for Llama-family decoders (llama, mistral, qwen2, qwen3).

A lean re-implementation of the decoder's forward on the model's own parameters (no copies, so the
engine always sees the policy's current weights) over a preallocated KV cache; see torch_engine.py's
docstring. Checked against the HF forward in tests/rollout.

Decode variants (off by default; measured in DECODE_RESULTS / docs/performance.md): ``fuse_qkv`` /
``fuse_gate_up`` concatenate those weights into one matmul each (copies made at every prefill, i.e. at the
start of every rollout, from the current parameters: never stale across updates); ``compile`` runs the decode
step (:func:`_decode_step`) under torch.compile, one whole graph with symbolic sizes.

LoRA (a peft model): each projection with an active adapter adds ``scale * B @ (A @ x)`` to ``W @ x``, from
the adapter's own weights, as peft's forward does (the sum in another order: equal to float rounding);
peft's variants (DoRA, merged or mixed-dtype adapters) fall back to the model's own forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from reinforcepp.models.inputs import LLAMA_FAMILY, is_llama_family, position_ids



_PREFILL_TOKENS = 8192  # packed prompt tokens per prefill chunk
_PREFILL_ATTN = 1 << 24  # prompts x Lp^2 attention scores per prefill chunk
_STATIC_ROPE_TYPES = {"default", "linear", "llama3", "yarn"}


@dataclass
class _LowRank:
    """One LoRA adapter of a projection: it adds scale * B @ (A @ x)."""

    a: torch.Tensor  # [rank, in]
    b: torch.Tensor  # [out, rank]
    scale: float


@dataclass
class _Layer:
    ln1: torch.Tensor
    ln2: torch.Tensor
    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    wo: torch.Tensor
    bq: torch.Tensor | None
    bk: torch.Tensor | None
    bv: torch.Tensor | None
    bo: torch.Tensor | None
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    wg: torch.Tensor
    wu: torch.Tensor
    wd: torch.Tensor
    bg: torch.Tensor | None
    bu: torch.Tensor | None
    bd: torch.Tensor | None
    eps1: float
    eps2: float
    qk_eps: float
    low: dict[str, tuple[_LowRank, ...]]  # projection name (q k v o g u d) -> its active LoRA adapters
    # fused projections (copies, built at each prefill from the current weights; None when off)
    wqkv: torch.Tensor | None = None  # [wq; wk; wv]
    bqkv: torch.Tensor | None = None
    wgu: torch.Tensor | None = None  # [wg; wu]
    bgu: torch.Tensor | None = None


def _is_plain_linear(module: Any) -> bool:
    return type(module) is torch.nn.Linear


def unwrap_peft(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (its layers carry the adapters, and its forward, unlike the
    wrapper's, declares position_ids and logits_to_keep); any other model as it is. Duck-typed: peft is an
    optional dependency."""
    return model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model


def _is_lora_linear(module: Any) -> bool:
    """A peft LoRA layer around a plain nn.Linear."""
    return hasattr(module, "lora_A") and _is_plain_linear(getattr(module, "base_layer", None))


def _active_adapters(module: Any) -> list[str]:
    """The adapters a peft LoRA layer adds in its forward now (none while switched off)."""
    if module.disable_adapters:
        return []
    return [name for name in module.active_adapters if name in module.lora_A]


def _lora_unsupported_reason(module: Any) -> str | None:
    """None if the fast path computes the peft LoRA layer ``module`` as its forward does, else why not."""
    if module.merged or getattr(module, "fan_in_fan_out", False):
        return "merged or transposed (fan_in_fan_out) LoRA weights"
    weight = module.base_layer.weight
    for name in _active_adapters(module):
        a, b = module.lora_A[name], module.lora_B[name]
        if name in getattr(module, "lora_variant", {}) or module.use_dora.get(name, False):
            return f"LoRA variant (e.g. DoRA) in adapter {name!r}"
        if not (_is_plain_linear(a) and _is_plain_linear(b)) or a.bias is not None or b.bias is not None:
            return f"LoRA adapter {name!r} is not two bias-free nn.Linear"
        if a.weight.dtype != weight.dtype or b.weight.dtype != weight.dtype:
            return f"LoRA adapter {name!r} in {a.weight.dtype}, the base weights in {weight.dtype}"
        if type(module.lora_dropout[name]) not in (torch.nn.Identity, torch.nn.Dropout):  # identity in eval mode
            return f"LoRA adapter {name!r} has an unknown dropout module"
    return None


def _linear_unsupported_reason(module: Any) -> str | None:
    if _is_plain_linear(module):
        return None
    if _is_lora_linear(module):
        return _lora_unsupported_reason(module)
    return "not an nn.Linear"


def _projection(module: Any) -> tuple[torch.Tensor, torch.Tensor | None, tuple[_LowRank, ...]]:
    """(weight, bias, active LoRA adapters) of a plain or LoRA linear layer, the model's own tensors."""
    if _is_plain_linear(module):
        return module.weight, module.bias, ()
    base = module.base_layer
    low = tuple(_LowRank(module.lora_A[name].weight, module.lora_B[name].weight, float(module.scaling[name]))
                for name in _active_adapters(module))
    return base.weight, base.bias, low


def _is_rmsnorm(module: Any) -> bool:
    return (
        isinstance(module, torch.nn.Module)
        and type(module).__name__.endswith("RMSNorm")
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and (hasattr(module, "variance_epsilon") or hasattr(module, "eps"))
    )


def _eps(module: Any) -> float:
    return float(getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6)))


def fast_path_unsupported_reason(model: Any, max_length: int | None = None) -> str | None:
    """None if the Llama-family fast path can run ``model`` (sequences up to ``max_length`` tokens; a PEFT
    model: its inner model, :func:`unwrap_peft`), else why not."""
    model = unwrap_peft(model)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not is_llama_family(model):
        return f"model_type {model_type!r} is not one of {sorted(LLAMA_FAMILY)}"
    core = getattr(model, "model", None)
    for name in ("embed_tokens", "layers", "norm", "rotary_emb"):
        if not hasattr(core, name):
            return f"model.model has no {name}"
    lm_head = getattr(model, "lm_head", None)
    if not _is_plain_linear(lm_head) or lm_head.bias is not None:
        return "lm_head is not a bias-free nn.Linear"
    if type(core.embed_tokens) is not torch.nn.Embedding:
        return "embed_tokens is not an nn.Embedding"
    if not _is_rmsnorm(core.norm):
        return "final norm is not an RMSNorm"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r} is not silu"
    rope_type = getattr(core.rotary_emb, "rope_type", "default")
    if rope_type not in _STATIC_ROPE_TYPES:
        return f"rope_type {rope_type!r} depends on the sequence length"
    if any(p.device.type == "meta" for p in model.parameters()):
        return "parameters on the meta device (offloaded)"
    if getattr(model, "_hf_hook", None) is not None:
        return "model has accelerate hooks"
    for layer in core.layers:
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if attn is None or mlp is None:
            return "decoder layer without self_attn/mlp"
        for prefix, module, names in (("self_attn", attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                                      ("mlp", mlp, ("gate_proj", "up_proj", "down_proj"))):
            for name in names:
                why = _linear_unsupported_reason(getattr(module, name, None))
                if why is not None:
                    return f"{prefix}.{name}: {why}"
        if not (_is_rmsnorm(getattr(layer, "input_layernorm", None))
                and _is_rmsnorm(getattr(layer, "post_attention_layernorm", None))):
            return "decoder layer norms are not RMSNorms"
        has_q_norm = hasattr(attn, "q_norm") or hasattr(attn, "k_norm")
        if has_q_norm and not (model_type == "qwen3" and _is_rmsnorm(attn.q_norm) and _is_rmsnorm(attn.k_norm)):
            return "unexpected q_norm/k_norm"
        window = getattr(attn, "sliding_window", None)
        if model_type == "mistral":
            window = getattr(config, "sliding_window", None)
        if window is not None and (max_length is None or max_length > window):
            return f"sliding-window attention (window {window})"
        if not isinstance(getattr(attn, "scaling", None), float):
            return "attention without a float scaling"
        if getattr(attn, "head_dim", None) is None:
            return "attention without head_dim"
    return None


def _fused(weights: tuple[torch.Tensor, ...], biases: tuple[torch.Tensor | None, ...]):
    """One weight stacking ``weights`` along the output dim (a copy of the current values) and its bias
    (None if all are None; zeros stand for a missing one)."""
    w = torch.cat(weights)
    if all(b is None for b in biases):
        return w, None
    b = torch.cat([torch.zeros(x.shape[0], dtype=x.dtype, device=x.device) if y is None else y
                   for x, y in zip(weights, biases)])
    return w, b


class _LlamaBackend:
    """Decoder forward for Llama-family models over a preallocated KV cache (see the module docstring).

    Decode runs "feature-major": the residual stream is kept as ``hT`` [hidden, B] and every projection is
    ``W @ xT`` (on CPU, MKL runs that orientation much faster than ``x @ W^T`` for decode-sized batches); the
    residual adds are fused into the output projections (``addmm_``). The prefill packs the prompts' tokens
    without padding for the projections and MLPs (padding is only used inside attention).
    """

    def __init__(self, model: Any, *, fuse_qkv: bool = False, fuse_gate_up: bool = False, compile: bool = False):
        self.model = unwrap_peft(model)
        self.config = self.model.config
        self.device = self.model.lm_head.weight.device
        self.dtype = self.model.lm_head.weight.dtype
        self.fuse_qkv = fuse_qkv
        self.fuse_gate_up = fuse_gate_up
        self.compile = compile

    # -- building blocks -------------------------------------------------------------------------------

    def _rms_t(self, hT: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        """RMSNorm over dim 0 of a feature-major [hidden, B] tensor (HF's formula: w * (h * rsqrt(mean h^2 + eps)))."""
        if hT.dtype == torch.float32:
            r = (hT * hT).mean(0).add_(eps).rsqrt_()
            return (hT * r).mul_(w.unsqueeze(1))
        hf = hT.float()
        r = (hf * hf).mean(0).add_(eps).rsqrt_()
        return (hf * r).to(hT.dtype).mul_(w.unsqueeze(1))

    @staticmethod
    def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        """RMSNorm over the last dim (HF's formula)."""
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        return w * xf.to(x.dtype)

    @staticmethod
    def _add_low_rank(outT: torch.Tensor, low: tuple[_LowRank, ...], xT: torch.Tensor) -> torch.Tensor:
        """outT += scale * B @ (A @ xT) for each LoRA adapter (none: outT as it is)."""
        for adapter in low:
            outT.addmm_(adapter.b, torch.mm(adapter.a, xT), alpha=adapter.scale)
        return outT

    @classmethod
    def _mm(cls, w: torch.Tensor, xT: torch.Tensor, b: torch.Tensor | None, low: tuple[_LowRank, ...] = ()) -> torch.Tensor:
        """W [N, K] @ xT [K, M] (+ b) (+ LoRA) -> [N, M]."""
        out = torch.mm(w, xT) if b is None else torch.addmm(b.unsqueeze(1), w, xT)
        return cls._add_low_rank(out, low, xT)

    @classmethod
    def _mm_into(cls, out: torch.Tensor, w: torch.Tensor, xT: torch.Tensor, b: torch.Tensor | None,
                 low: tuple[_LowRank, ...] = ()) -> None:
        if b is None:
            torch.mm(w, xT, out=out)
        else:
            torch.addmm(b.unsqueeze(1), w, xT, out=out)
        cls._add_low_rank(out, low, xT)

    @classmethod
    def _add_mm(cls, hT: torch.Tensor, w: torch.Tensor, xT: torch.Tensor, b: torch.Tensor | None,
                low: tuple[_LowRank, ...]) -> None:
        """hT += W @ xT (+ b) (+ LoRA): an output projection fused into the residual add."""
        if b is None:
            hT.addmm_(w, xT)
        else:
            hT.add_(torch.addmm(b.unsqueeze(1), w, xT))
        cls._add_low_rank(hT, low, xT)

    def _collect(self) -> None:
        """Point at the model's current parameters (no copies)."""
        core = self.model.model
        cfg = self.config
        attn0 = core.layers[0].self_attn
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim = attn0.head_dim
        self.groups = self.num_heads // self.num_kv_heads
        self.scaling = attn0.scaling
        self.embed = core.embed_tokens.weight
        self.norm_w, self.norm_eps = core.norm.weight, _eps(core.norm)
        self.lm_w = self.model.lm_head.weight
        layers = []
        for layer in core.layers:
            a, m = layer.self_attn, layer.mlp
            qn, kn = getattr(a, "q_norm", None), getattr(a, "k_norm", None)
            (wq, bq, lq), (wk, bk, lk), (wv, bv, lv), (wo, bo, lo) = map(_projection, (a.q_proj, a.k_proj, a.v_proj, a.o_proj))
            (wg, bg, lg), (wu, bu, lu), (wd, bd, ld) = map(_projection, (m.gate_proj, m.up_proj, m.down_proj))
            layers.append(
                _Layer(
                    ln1=layer.input_layernorm.weight, ln2=layer.post_attention_layernorm.weight,
                    wq=wq, wk=wk, wv=wv, wo=wo, bq=bq, bk=bk, bv=bv, bo=bo,
                    q_norm=None if qn is None else qn.weight, k_norm=None if kn is None else kn.weight,
                    wg=wg, wu=wu, wd=wd, bg=bg, bu=bu, bd=bd,
                    eps1=_eps(layer.input_layernorm), eps2=_eps(layer.post_attention_layernorm),
                    qk_eps=_eps(qn) if qn is not None else 0.0,
                    low=dict(q=lq, k=lk, v=lv, o=lo, g=lg, u=lu, d=ld),
                )
            )
            L = layers[-1]
            if self.fuse_qkv:
                L.wqkv, L.bqkv = _fused((wq, wk, wv), (bq, bk, bv))
            if self.fuse_gate_up:
                L.wgu, L.bgu = _fused((wg, wu), (bg, bu))
        self.layers = layers

    def _rope_tables(self, length: int) -> None:
        """[length, 2 * head_dim] table of (cos, sign-folded sin) from the model's own rotary module."""
        positions = torch.arange(length, device=self.device).unsqueeze(0)
        probe = torch.zeros(1, dtype=self.dtype, device=self.device)
        cos, sin = self.model.model.rotary_emb(probe, positions)
        sin = sin[0].to(self.dtype).clone()
        # rotate_half(x) * sin == roll(x, D/2) * [-sin_1, sin_2]
        sin[:, : self.head_dim // 2].neg_()
        self.rope_table = torch.cat([cos[0].to(self.dtype), sin], dim=1).contiguous()

    def _mlp_t(self, L: _Layer, hT: torch.Tensor, work: torch.Tensor | None = None) -> None:
        """hT += MLP(norm(hT)), feature-major; ``work`` is an optional [2 * intermediate, B] scratch buffer."""
        xT = self._rms_t(hT, L.ln2, L.eps2)
        if work is None:
            gate = F.silu(self._mm(L.wg, xT, L.bg, L.low["g"]), inplace=True).mul_(self._mm(L.wu, xT, L.bu, L.low["u"]))
        else:
            inter = L.wg.shape[0]
            gate, up = work[:inter], work[inter:]
            self._mm_into(gate, L.wg, xT, L.bg, L.low["g"])
            self._mm_into(up, L.wu, xT, L.bu, L.low["u"])
            F.silu(gate, inplace=True).mul_(up)
        self._add_mm(hT, L.wd, gate, L.bd, L.low["d"])

    def _logits_t(self, hT: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, V] (float32, contiguous) from the last hidden states [hidden, B]."""
        xT = self._rms_t(hT, self.norm_w, self.norm_eps)
        return torch.mm(self.lm_w, xT).t().float().contiguous()

    # -- backend interface -----------------------------------------------------------------------------

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, capacity: int, repeats: int) -> torch.Tensor:
        """Run the prompts [P, Lp]; fill the KV cache of the P*repeats rows; return last-position logits [P, V].

        Prompts go through in chunks (about ``_PREFILL_TOKENS`` tokens and ``_PREFILL_ATTN`` attention scores
        each) so that activations stay bounded for large batches of long prompts.
        """
        self._collect()
        P, Lp = ids.shape
        B = P * repeats
        Hkv, D = self.num_kv_heads, self.head_dim
        dev, dt = self.device, self.dtype
        self._rope_tables(capacity)
        self.k_cache = [torch.empty(B, Hkv, capacity, D, dtype=dt, device=dev) for _ in self.layers]
        self.v_cache = [torch.empty(B, Hkv, capacity, D, dtype=dt, device=dev) for _ in self.layers]
        chunk = max(1, min(_PREFILL_TOKENS // Lp, _PREFILL_ATTN // (Lp * Lp)))
        logits = torch.cat(
            [self._prefill_rows(ids[i : i + chunk], mask[i : i + chunk], i, repeats) for i in range(0, P, chunk)]
        )
        # decode state of the P * repeats rows
        self.length = Lp
        self.positions = mask.sum(-1).repeat_interleave(repeats)  # position of each row's next token
        self.key_bias = torch.zeros(B, capacity, dtype=torch.float32, device=dev)
        self.key_bias[:, :Lp].masked_fill_(mask.repeat_interleave(repeats, 0) == 0, torch.finfo(torch.float32).min)
        return logits

    def _prefill_rows(self, ids: torch.Tensor, mask: torch.Tensor, first: int, repeats: int) -> torch.Tensor:
        """Prefill prompts ``first ..`` (ids/mask [P, Lp]): write cache rows ``first * repeats ..``; logits [P, V]."""
        P, Lp = ids.shape
        H, Hkv, D, G = self.num_heads, self.num_kv_heads, self.head_dim, self.groups
        dev, dt = self.device, self.dtype
        rows = slice(first * repeats, (first + P) * repeats)
        keep = mask.bool()
        flat = keep.reshape(-1).nonzero().squeeze(1)  # packed token -> flat index into [P * Lp]
        N = flat.numel()
        pos = position_ids(mask).reshape(-1).index_select(0, flat)
        rope = self.rope_table.index_select(0, pos)  # [N, 2D]
        cos, sin = rope[:, :D].t().unsqueeze(0), rope[:, D:].t().unsqueeze(0)  # [1, D, N]
        # causal and key-not-padding; rows of padding queries are fully masked but stay finite
        allowed = torch.ones(Lp, Lp, dtype=torch.bool, device=dev).tril_().unsqueeze(0) & keep.unsqueeze(1)
        attn_bias = torch.zeros(P, 1, Lp, Lp, dtype=dt, device=dev)
        attn_bias.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dt).min)
        last = mask.sum(-1).cumsum(0) - 1  # packed index of each prompt's last token

        def to_padded(xT: torch.Tensor, heads: int) -> torch.Tensor:
            """[heads * D, N] feature-major -> [P, heads, Lp, D] (zeros on padding)."""
            out = torch.zeros(P * Lp, heads, D, dtype=dt, device=dev)
            out.index_copy_(0, flat, xT.t().reshape(N, heads, D))
            return out.view(P, Lp, heads, D).transpose(1, 2).contiguous()

        hT = F.embedding(ids.reshape(-1).index_select(0, flat), self.embed).t().contiguous()  # [hidden, N]
        for L, kc, vc in zip(self.layers, self.k_cache, self.v_cache):
            xT = self._rms_t(hT, L.ln1, L.eps1)
            q = self._mm(L.wq, xT, L.bq, L.low["q"]).view(H, D, N)
            k = self._mm(L.wk, xT, L.bk, L.low["k"]).view(Hkv, D, N)
            v = self._mm(L.wv, xT, L.bv, L.low["v"])
            if L.q_norm is not None:
                q = self._rms(q.transpose(1, 2), L.q_norm, L.qk_eps).transpose(1, 2)
                k = self._rms(k.transpose(1, 2), L.k_norm, L.qk_eps).transpose(1, 2)
            q = torch.addcmul(q * cos, q.roll(D // 2, dims=1), sin).view(H * D, N)
            k = torch.addcmul(k * cos, k.roll(D // 2, dims=1), sin).view(Hkv * D, N)
            qp, kp, vp = to_padded(q, H), to_padded(k, Hkv), to_padded(v, Hkv)
            # each prompt's keys/values go to its `repeats` rows
            kc[rows].view(P, repeats, Hkv, -1, D)[:, :, :, :Lp].copy_(kp.unsqueeze(1))
            vc[rows].view(P, repeats, Hkv, -1, D)[:, :, :, :Lp].copy_(vp.unsqueeze(1))
            if G > 1:
                kp, vp = kp.repeat_interleave(G, dim=1), vp.repeat_interleave(G, dim=1)
            o = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=attn_bias, scale=self.scaling)  # [P, H, Lp, D]
            o = o.transpose(1, 2).reshape(P * Lp, H * D).index_select(0, flat)  # [N, H*D]
            self._add_mm(hT, L.wo, o.t(), L.bo, L.low["o"])
            self._mlp_t(L, hT)
        return self._logits_t(hT.index_select(1, last))

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` of the batch (cache included)."""
        self.k_cache = [c.index_select(0, rows) for c in self.k_cache]
        self.v_cache = [c.index_select(0, rows) for c in self.v_cache]
        self.positions = self.positions.index_select(0, rows)
        self.key_bias = self.key_bias.index_select(0, rows)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row ([B]); return next-token logits [B, V] (float32)."""
        step = _compiled_decode_step() if self.compile else _decode_step
        logits = step(self, tokens, self.length)
        self.length += 1
        self.positions = self.positions + 1
        return logits


def _decode_step(be: _LlamaBackend, tokens: torch.Tensor, slot: int) -> torch.Tensor:
    """One decoding step of backend ``be``: write the keys/values of ``tokens`` [B] at cache position ``slot``
    and return the next-token logits [B, V] (float32). A function of its arguments and ``be``'s tensors only
    (no state update), so that torch.compile can trace it whole (:func:`_compiled_decode_step`)."""
    B = tokens.shape[0]
    H, Hkv, D, G = be.num_heads, be.num_kv_heads, be.head_dim, be.groups
    nq, nk = H * D, Hkv * D
    kv_len = slot + 1
    rope = be.rope_table.index_select(0, be.positions).unsqueeze(1)  # [B, 1, 2D]
    cos, sin = rope[..., :D], rope[..., D:]
    bias = be.key_bias[:, :kv_len].view(B, 1, kv_len)
    qkvT = torch.empty(nq + 2 * nk, B, dtype=be.dtype, device=be.device)  # reused by every layer
    work = torch.empty(2 * be.layers[0].wg.shape[0], B, dtype=be.dtype, device=be.device)
    hT = F.embedding(tokens, be.embed).t().contiguous()  # [hidden, B]
    for L, kc, vc in zip(be.layers, be.k_cache, be.v_cache):
        xT = be._rms_t(hT, L.ln1, L.eps1)
        if L.wqkv is None:
            be._mm_into(qkvT[:nq], L.wq, xT, L.bq, L.low["q"])
            be._mm_into(qkvT[nq : nq + nk], L.wk, xT, L.bk, L.low["k"])
            be._mm_into(qkvT[nq + nk :], L.wv, xT, L.bv, L.low["v"])
        else:
            be._mm_into(qkvT, L.wqkv, xT, L.bqkv)
            be._add_low_rank(qkvT[:nq], L.low["q"], xT)
            be._add_low_rank(qkvT[nq : nq + nk], L.low["k"], xT)
            be._add_low_rank(qkvT[nq + nk :], L.low["v"], xT)
        qkv = qkvT.t().contiguous()  # [B, (H + 2 Hkv) D], one blocked transpose
        qk = qkv[:, : nq + nk].view(B, H + Hkv, D)
        if L.q_norm is not None:
            qk = torch.cat([be._rms(qk[:, :H], L.q_norm, L.qk_eps), be._rms(qk[:, H:], L.k_norm, L.qk_eps)], 1)
        qk = torch.addcmul(qk * cos, qk.roll(D // 2, dims=-1), sin)
        kc[:, :, slot:kv_len].copy_(qk[:, H:].unsqueeze(2))  # a slice, not an int index: no specialization on slot
        vc[:, :, slot:kv_len].copy_(qkv[:, nq + nk :].view(B, Hkv, 1, D))
        q = qk[:, :H].reshape(B * Hkv, G, D)
        keys = kc.view(B * Hkv, -1, D)[:, :kv_len]
        scores = torch.bmm(q, keys.transpose(1, 2)).view(B, Hkv * G, kv_len)
        if scores.dtype != torch.float32:  # softmax in float32, as HF
            scores = scores.float()
        probs = torch.add(bias, scores, alpha=be.scaling).softmax(dim=-1).to(be.dtype)
        o = torch.bmm(probs.view(B * Hkv, G, kv_len), vc.view(B * Hkv, -1, D)[:, :kv_len]).view(B, H * D)
        be._add_mm(hT, L.wo, o.t(), L.bo, L.low["o"])
        if L.wgu is None:
            be._mlp_t(L, hT, work)
        else:
            inter = L.wg.shape[0]
            xT = be._rms_t(hT, L.ln2, L.eps2)
            be._mm_into(work, L.wgu, xT, L.bgu)
            gate, up = work[:inter], work[inter:]
            be._add_low_rank(gate, L.low["g"], xT)
            be._add_low_rank(up, L.low["u"], xT)
            be._add_mm(hT, L.wd, F.silu(gate, inplace=True).mul_(up), L.bd, L.low["d"])
    return be._logits_t(hT)


_COMPILED_DECODE_STEP = None


def _compiled_decode_step():
    """:func:`_decode_step` under ``torch.compile`` (inductor, one whole graph, every size symbolic: one
    compilation serves every batch size, cache length and decoding step of a model shape; built once)."""
    global _COMPILED_DECODE_STEP
    if _COMPILED_DECODE_STEP is None:
        _COMPILED_DECODE_STEP = torch.compile(_decode_step, fullgraph=True, dynamic=True)
    return _COMPILED_DECODE_STEP
