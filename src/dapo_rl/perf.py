"""Model FLOP counting and the machine's matmul peak, for model FLOP utilisation (MFU).

Owns one definition of the work a step needs, so that two implementations of the same step
are judged against the same number. The count is analytical (no profiler) and covers the
matrix multiplications of a Llama-style decoder:

- body: every linear layer of the decoder blocks, 2 FLOPs per weight per token fed;
- attention: a token at absolute position t attends to t + 1 keys; scores (Q K^T) and the
  weighted sum (A V) cost 2 * width FLOPs per key each, per layer (causal, nothing masked
  is counted);
- LM head: 2 * hidden * vocab FLOPs at each position whose logits are needed.

The required work to sample or score c completion tokens after a prompt of p tokens is one
pass over the prompt and the first c - 1 completion tokens (the last token is never fed),
with the LM head at the c positions that predict completion tokens. A group's G
completions share one prompt, so the prompt is counted once per group: an implementation
that encodes it G times does more work than the step needs, and that shows as lower MFU.
Training (forward + backward) counts 3 times the forward FLOPs. Embedding lookups, norms,
activations and the optimizer are not counted: they are a small share of this model's work.

MFU divides by the matmul peak of the dtype the work ran in (``matmul_peaks`` measures the
float32 and bfloat16 peaks of the machine it runs on; ``peak_for`` picks one).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

TRAIN_FACTOR = 3  # forward + backward = 3 x forward (the backward pass costs two forwards)


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs of a decoder-only transformer."""

    body_params: int  # weights of the decoder blocks' linear layers
    head_params: int  # hidden * vocab: the LM head's weights
    layers: int
    attn_width: int  # query heads * head dim: the width of Q K^T and A V per token

    @classmethod
    def from_config(cls, config) -> ModelShape:
        """From a Llama-style transformers config (gated MLP, grouped-query attention)."""
        d, layers = config.hidden_size, config.num_hidden_layers
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or d // heads
        attn = d * heads * head_dim * 2 + d * kv_heads * head_dim * 2  # q, o; k, v
        mlp = 3 * d * config.intermediate_size  # gate, up, down
        return cls(
            body_params=layers * (attn + mlp),
            head_params=d * config.vocab_size,
            layers=layers,
            attn_width=heads * head_dim,
        )


def forward_flops(shape: ModelShape, new_tokens: int, cached_tokens: int, head_tokens: int) -> int:
    """Forward FLOPs of feeding ``new_tokens`` tokens after ``cached_tokens`` tokens already in
    the KV cache, with the LM head at ``head_tokens`` positions."""
    # keys attended: positions cached .. cached + new - 1, each attending to position + 1 keys
    keys = new_tokens * cached_tokens + new_tokens * (new_tokens + 1) // 2
    return (
        2 * shape.body_params * new_tokens
        + 4 * shape.layers * shape.attn_width * keys
        + 2 * shape.head_params * head_tokens
    )


def group_flops(shape: ModelShape, prompt_len: int, completion_lens: Sequence[int]) -> int:
    """Forward FLOPs one group needs: its prompt once, then each completion on top of it."""
    total = forward_flops(shape, prompt_len, 0, 0)
    for c in map(int, completion_lens):
        if c > 0:
            total += forward_flops(shape, c - 1, prompt_len, c)
    return total


def batch_flops(
    shape: ModelShape,
    prompt_lens: Sequence[int],
    completion_lens: Sequence[int],
    group_size: int,
) -> int:
    """Forward FLOPs of a batch of contiguous groups (rows ``i*G .. i*G+G-1`` share a prompt)."""
    if len(prompt_lens) != len(completion_lens) or len(prompt_lens) % group_size:
        raise ValueError(f"{len(prompt_lens)} rows are not whole groups of {group_size}")
    return sum(
        group_flops(shape, int(prompt_lens[i]), completion_lens[i : i + group_size])
        for i in range(0, len(prompt_lens), group_size)
    )


def matmul_peak(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best FLOP/s of an ``n x n`` by ``n x n`` ``torch.mm`` over ``repeats`` timed runs.

    Runs with torch's current thread count; the first multiplication warms up and is not timed.
    """
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    out = torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# The dtypes a run computes in (``model.dtype``) and their matmul peaks: on a CPU with bf16
# matrix units (Intel AMX) a bf16 product runs several times faster than a float32 one, so
# an MFU against the float32 peak overstates how much of the machine a bf16 run uses.
PEAK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def has_bf16_units() -> bool:
    """Whether this machine multiplies bf16 matrices in dedicated units: a CUDA GPU that
    supports bf16 (compute capability 8.0 or later), or a CPU with Intel AMX tiles.

    ``DAPO_RL_BF16_UNITS=0`` or ``=1`` overrides the detection (the test suite sets 0, so
    that its runs compute in float32 on every machine).
    """
    forced = os.environ.get("DAPO_RL_BF16_UNITS")
    if forced in ("0", "1"):
        return forced == "1"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def auto_dtype() -> str:
    """``model.dtype=auto``: bfloat16 where the matrix units make it fast, else float32."""
    return "bfloat16" if has_bf16_units() else "float32"


def matmul_peaks(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """The ``matmul_peak`` of each of ``PEAK_DTYPES`` on this machine, in FLOP/s, by name.

    Measured one after the other with the same threads; ratios between them are what carries
    from one machine (or one load) to the next.
    """
    return {name: matmul_peak(n, repeats, dtype) for name, dtype in PEAK_DTYPES.items()}


def best_peaks(*measured: dict[str, float]) -> dict[str, float]:
    """Per dtype, the best of several ``matmul_peaks`` results (before and after a run)."""
    return {name: max(m[name] for m in measured) for name in measured[0]}


def peak_for(peaks: dict[str, float], dtype: str) -> float:
    """The peak an MFU in ``dtype`` (a ``model.dtype`` value) is measured against."""
    if dtype not in peaks:
        raise ValueError(f"no matmul peak measured for {dtype!r}: have {', '.join(peaks)}")
    return peaks[dtype]


def mfu(flops: float, seconds: float, peak: float) -> float:
    """Model FLOP utilisation: achieved FLOP/s (``flops / seconds``) over ``peak`` FLOP/s."""
    if seconds <= 0 or peak <= 0:
        return 0.0
    return flops / seconds / peak
