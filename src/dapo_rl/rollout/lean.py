"""A lean decode step for Llama-style models (Llama, Mistral, Qwen2), used by ``HFEngine``.

Decoding one token per row through the transformers forward costs about 60 small operator
calls per layer (and a ``torch.cat`` that copies the whole KV cache per layer per token), so
on a CPU a 135M-parameter model spends much of a decode step in dispatch and copies. This
step computes the same function with about 18 calls per layer (measured gains and limits:
docs/benchmarks.md, "bfloat16 on the CPU's matrix units"):
- q, k and v come from one matrix product (their weights stacked once per ``generate``
  call), as do the MLP's gate and up projections;
- rotary embeddings use ``roll`` with a sign-folded sine, on q and k together;
- the KV cache is preallocated for the prompt plus ``max_new_tokens`` and written in place;
- attention is two batched products over the cache rows written so far, with the padding
  mask, the softmax in float32 (as the eager attention of transformers does);
- bf16 weights on a CPU are laid out for the matrix units once per ``generate`` call
  (oneDNN prepacking); ``F.linear`` would redo that layout on every call.
The prompt is still prefilled by the model's own forward (one call; shared-prefix
prefill included) and its cache copied in. ``unsupported`` names what rules a model out
(another architecture, LoRA adapters, FSDP shards, logit post-processing, dynamic RoPE,
sliding windows, biases this step does not apply); the engine then decodes with the
model's forward. ``tests/rollout/test_lean.py`` pins it to the model's own forward.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from dapo_rl import dist

ARCHITECTURES = ("llama", "mistral", "qwen2")


def unsupported(model) -> str | None:
    """Why the lean step cannot decode ``model`` (None: it can)."""
    from dapo_rl.models import is_lora, logits_transform

    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in ARCHITECTURES:
        return f"architecture {kind!r} is not one of {', '.join(ARCHITECTURES)}"
    if is_lora(model):
        return "LoRA adapters are applied by the model's forward"
    if dist.model_is_sharded(model):
        return "FSDP shards are gathered by the model's forward"
    if logits_transform(config) is not None:
        return "the model post-processes its logits"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    if getattr(config, "mlp_bias", False):
        return "MLP biases"
    if kind == "llama" and getattr(config, "attention_bias", False):
        return "attention biases"
    rope = getattr(getattr(model.model, "rotary_emb", None), "rope_type", None)
    if rope is None or "dynamic" in rope:
        return f"RoPE type {rope!r}"
    if kind == "mistral" and getattr(config, "sliding_window", None) is not None:
        return "sliding-window attention"
    if kind == "qwen2" and getattr(config, "use_sliding_window", False):
        return "sliding-window attention"
    return None


def _rms_norm(x: torch.Tensor, norm) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)


def can_prepack(weight: torch.Tensor) -> bool:
    """bf16 weights on a CPU with oneDNN: ``F.linear`` re-lays the weight out for the matrix
    units on every call, which at a few rows costs more than the product itself."""
    return (
        weight.dtype == torch.bfloat16
        and weight.device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


def _linear(weight: torch.Tensor, bias: torch.Tensor | None, rows: int, prepack: bool):
    """``x -> F.linear(x, weight, bias)``; with ``prepack``, the weight laid out once."""
    if not prepack:
        return functools.partial(F.linear, weight=weight, bias=bias)
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
    return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class LeanDecoder:
    """Decodes one token per row with the weights ``model`` holds now.

    Built once per batch from the prefilled transformers ``cache`` (rows already
    repeated per completion), with room for ``capacity`` positions in all.
    """

    def __init__(self, model, cache, capacity: int, prepack: bool | None = None):
        config, body = model.config, model.model
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        first = cache.layers[0].keys
        rows, length = first.shape[0], first.shape[2]
        head = model.lm_head.weight
        prepack = can_prepack(head) if prepack is None else prepack
        self.embed, self.norm = body.embed_tokens, body.norm
        self.head = _linear(head, model.lm_head.bias, rows, prepack)
        rotary = body.rotary_emb
        self.inv_freq, self.rope_scale = rotary.inv_freq.float(), rotary.attention_scaling
        self.layers = []
        for layer in body.layers:
            att, mlp = layer.self_attn, layer.mlp
            qkv = [att.q_proj, att.k_proj, att.v_proj]
            bias = None if qkv[0].bias is None else torch.cat([p.bias for p in qkv])
            self.layers.append(
                (
                    layer.input_layernorm,
                    _linear(torch.cat([p.weight for p in qkv]), bias, rows, prepack),
                    _linear(att.o_proj.weight, None, rows, prepack),
                    layer.post_attention_layernorm,
                    _linear(
                        torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), None, rows, prepack
                    ),
                    _linear(mlp.down_proj.weight, None, rows, prepack),
                )
            )
        # one (2, rows, kv_heads, capacity, head_dim) tensor per layer: keys, then values
        self.kv = []
        for layer in cache.layers:
            kv = first.new_empty((2, rows, self.kv_heads, capacity, self.head_dim))
            kv[0, :, :, :length] = layer.keys
            kv[1, :, :, :length] = layer.values
            self.kv.append(kv)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the rows ``keep`` (rows that ended leave the batch)."""
        self.kv = [kv[:, keep] for kv in self.kv]

    def _rotary(self, positions: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sign-folded sin at each row's position, (A, 1, head_dim)."""
        freqs = positions.float() * self.inv_freq  # (A, head_dim / 2)
        emb = torch.cat([freqs, freqs], -1)[:, None]
        half = self.head_dim // 2
        sin = emb.sin() * self.rope_scale
        # rotate_half(x) * sin == roll(x, half) * [-sin_1, sin_2]
        sin = torch.cat([-sin[..., :half], sin[..., half:]], -1)
        return (emb.cos() * self.rope_scale).to(dtype), sin.to(dtype)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor, attn: torch.Tensor):
        """Logits (A, V) after feeding ``tokens`` (A,) at ``positions`` (A, 1).

        ``attn`` (A, L) is 1 on the cache positions each row attends to, the new token's
        (its last column) included; the new keys and values are written at column L - 1.
        """
        rows, length = attn.shape
        h = self.embed(tokens)  # (A, D)
        cos, sin = self._rotary(positions, h.dtype)
        groups, dh, half = self.heads // self.kv_heads, self.head_dim, self.head_dim // 2
        # the padding mask and the 1/sqrt(d) scale, shared by all layers
        bias = torch.zeros(attn.shape, dtype=torch.float32, device=h.device)
        bias = bias.masked_fill(attn == 0, float("-inf"))[:, None, None, :]
        scale = dh**-0.5
        for (norm1, qkv_proj, o_proj, norm2, gate_up, down), kv in zip(
            self.layers, self.kv, strict=True
        ):
            qkv = qkv_proj(_rms_norm(h, norm1))
            qk = qkv[:, : (self.heads + self.kv_heads) * dh].view(rows, -1, dh)
            qk = torch.addcmul(qk * cos, qk.roll(half, -1), sin)
            q = qk[:, : self.heads].view(rows, self.kv_heads, groups, dh)
            kv[0, :, :, length - 1] = qk[:, self.heads :]
            kv[1, :, :, length - 1] = qkv[:, (self.heads + self.kv_heads) * dh :].view(
                rows, self.kv_heads, dh
            )
            keys, values = kv[0, :, :, :length], kv[1, :, :, :length]
            scores = torch.add(bias, torch.matmul(q, keys.transpose(-1, -2)), alpha=scale)
            probs = torch.softmax(scores, -1).to(h.dtype)
            out = torch.matmul(probs, values).view(rows, -1)  # (A, H * dh)
            h = h + o_proj(out)
            gate, up = gate_up(_rms_norm(h, norm2)).chunk(2, -1)
            h = h + down(F.silu(gate) * up)
        return self.head(_rms_norm(h, self.norm))
