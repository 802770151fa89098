"""Memory per GPU on paper (``estimate``), and its measurement (``PeakTensorBytes``).

Owns one formula for the bytes a training rank holds, by kind, for a Llama-style decoder
(``perf.ModelShape`` counts its weights) and a parallel layout (``Layout``). Terms:

- weights, gradients, AdamW moments: float32 master copies, 4 + 4 + 8 bytes per parameter,
  divided by the world size under FSDP (sharded); whole otherwise. With FSDP the weights of
  the layer running (and the next, prefetched) are gathered whole, in the compute dtype;
  their gradients are whole until reduce-scattered.
- activations: what autograd keeps per token of one micro-batch between forward and
  backward (``activation_bytes_per_token``: hidden, KV and MLP-width vectors per layer,
  counted below); with activation checkpointing only each layer's input is kept, plus the
  saved tensors of the one layer being recomputed.
- logits: the float32 (positions x vocab) tensors alive at once in the LM head, over a chunk
  of ``logits_chunk`` positions or over the whole micro-batch: 5 in the forward (logits,
  log-softmax, the entropy's temporaries), 3 in the backward.
- KV cache of generation: 2 (keys, values) x layers x KV width x tokens, compute dtype.

The peak: weights, AdamW state and gathered layers, plus the larger of the forward's
(activations + forward logits) and the backward's (activations + backward logits +
gradients; the update frees gradients between optimizer steps), plus the KV cache; or, when
larger, the optimizer step: weights, gradients, AdamW state and one float32 temporary per
parameter (torch's foreach AdamW), which is the peak when micro-batches are small.

Not counted: temporaries inside one kernel, the allocator's fragmentation and caching, the
CUDA context, communication buffers. The test (tests/test_memory.py) measures the live tensor
bytes of a real update on the CPU (``PeakTensorBytes``) and states how close the formula is.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from dapo_rl.perf import ModelShape

# Saved per layer and token, counted from what autograd keeps in transformers' Llama layer:
# each RMSNorm keeps its float32 input and normalised input (2 x 2 hidden vectors, float32
# whatever the compute dtype) and its output (2 x 1); attention keeps Q and its output
# (2 hidden vectors) and the output projection's input (1); K and V (2 KV-width vectors);
# the MLP keeps gate, up, SiLU(gate) and their product (4 MLP-width vectors). Measured on
# the CPU (tests/test_memory.py): within a few percent of this count.
_NORM_FLOAT32 = 4  # hidden vectors, always float32
_SAVED_HIDDEN = 5  # hidden vectors in the compute dtype
_SAVED_KV = 2
_SAVED_MLP = 4
# float32 (positions x vocab) tensors alive at once: in the forward the logits, their
# log-softmax and the entropy's three temporaries; in the backward the saved log-softmax,
# its gradient and the logits' gradient
_LOGITS_FORWARD, _LOGITS_BACKWARD = 5, 3

DTYPE_BYTES = {"float32": 4, "bfloat16": 2}


@dataclass(frozen=True)
class Layout:
    """How one training rank is set up."""

    world: int = 1  # data-parallel ranks
    fsdp: bool = False  # weights, gradients and AdamW state sharded over the ranks
    compute_dtype: str = "float32"  # activations and gathered weights: float32 or bfloat16
    micro_batch_tokens: int = 4096  # tokens of one micro-batch (prompt + completions)
    logits_positions: int = 4096  # positions whose logits a micro-batch needs
    logits_chunk: int = 0  # positions per LM-head chunk; 0 = all at once
    grad_checkpointing: bool = False
    kv_tokens: int = 0  # tokens in the generation KV cache on this rank


@dataclass(frozen=True)
class Shape:
    """What the memory model needs of a decoder: ``perf.ModelShape`` plus widths."""

    params: int  # every parameter (embeddings and an untied head included)
    layer_params: int  # parameters of one decoder layer
    layers: int
    hidden: int
    mlp: int  # intermediate size
    kv_width: int  # KV heads x head dim
    vocab: int

    @classmethod
    def from_config(cls, config) -> Shape:
        flops = ModelShape.from_config(config)
        d, v = config.hidden_size, config.vocab_size
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or d // heads
        tied = getattr(config, "tie_word_embeddings", False)
        norms = (2 * flops.layers + 1) * d
        return cls(
            params=flops.body_params + d * v * (1 if tied else 2) + norms,
            layer_params=flops.body_params // flops.layers + 2 * d,
            layers=flops.layers,
            hidden=d,
            mlp=config.intermediate_size,
            kv_width=config.num_key_value_heads * head_dim,
            vocab=v,
        )


def activation_bytes_per_token(shape: Shape, dtype_bytes: int) -> int:
    """Bytes autograd keeps per token for one decoder layer (no checkpointing)."""
    vectors = _SAVED_HIDDEN * shape.hidden + _SAVED_KV * shape.kv_width + _SAVED_MLP * shape.mlp
    return _NORM_FLOAT32 * shape.hidden * 4 + vectors * dtype_bytes


def estimate(shape: Shape, layout: Layout) -> dict[str, int]:
    """Bytes one rank holds at the peak of an update, by kind, and their ``total``."""
    b = DTYPE_BYTES[layout.compute_dtype]
    n = layout.world if layout.fsdp else 1
    out = {
        "weights": 4 * shape.params // n,
        "gradients": 4 * shape.params // n,
        "optimizer": 8 * shape.params // n,
    }
    if layout.fsdp and layout.world > 1:
        # two layers gathered whole (running + prefetched) and one layer's whole gradient
        out["gathered"] = 2 * shape.layer_params * b + 4 * shape.layer_params
    tokens = layout.micro_batch_tokens
    per_layer = activation_bytes_per_token(shape, b) * tokens
    if layout.grad_checkpointing:
        out["activations"] = shape.layers * tokens * shape.hidden * b + per_layer
    else:
        out["activations"] = shape.layers * per_layer
    positions = layout.logits_positions
    if layout.logits_chunk:
        positions = min(positions, layout.logits_chunk)
    one = positions * shape.vocab * 4
    out["logits"] = _LOGITS_FORWARD * one
    out["kv_cache"] = 2 * shape.layers * shape.kv_width * layout.kv_tokens * b
    act = out["activations"]
    passes = max(act + out["logits"], act + _LOGITS_BACKWARD * one + out["gradients"])
    fixed = out["weights"] + out["optimizer"] + out.get("gathered", 0) + out["kv_cache"]
    out["step_temporaries"] = out["weights"]  # one float32 value per (local) parameter
    step = out["weights"] + out["gradients"] + out["optimizer"] + out["step_temporaries"]
    out["total"] = max(fixed + passes, step)
    return out


class PeakTensorBytes(TorchDispatchMode):
    """Live tensor bytes created inside the ``with`` block: ``now`` and ``peak``.

    Counts every storage an operation returns (once, until it is freed), so it measures what
    a GPU allocator would have to hold, without the allocator's caching. Tensors that existed
    before the block (weights) are not counted: pass them to ``count`` to include them.
    """

    def __init__(self):
        super().__init__()
        self.now = self.peak = 0
        self._live: set[int] = set()

    def _add(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = st.data_ptr()
        if key in self._live or st.nbytes() == 0 or t.device.type == "meta":
            return
        self._live.add(key)
        self.now += st.nbytes()
        self.peak = max(self.peak, self.now)
        weakref.finalize(st, self._free, key, st.nbytes())

    def _free(self, key: int, nbytes: int) -> None:
        self._live.discard(key)
        self.now -= nbytes

    def count(self, tensors) -> None:
        """Include tensors made before the block (weights, optimizer state)."""
        for t in tensors:
            self._add(t)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t)
        return out
