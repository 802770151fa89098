import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, LlamaConfig

from dapo_rl.models import tiny_config
from dapo_rl.perf import (
    TRAIN_FACTOR,
    ModelShape,
    batch_flops,
    best_peaks,
    forward_flops,
    group_flops,
    matmul_peak,
    matmul_peaks,
    mfu,
    peak_for,
)

# body 10 weights, head 100 weights, 2 layers, attention width 3: small enough to add by hand
TOY = ModelShape(body_params=10, head_params=100, layers=2, attn_width=3)


def test_smollm2_shape_hand_computed():
    # SmolLM2-135M: d 576, 9 query heads and 3 KV heads of 64, MLP 1536, 30 layers, vocab 49152.
    # per layer: q, o 2 * 576 * 576 = 663552; k, v 2 * 576 * 192 = 221184;
    # gate, up, down 3 * 576 * 1536 = 2654208 -> 3538944; x 30 = 106168320
    config = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        vocab_size=49152,
    )
    shape = ModelShape.from_config(config)
    assert shape == ModelShape(
        body_params=106_168_320, head_params=576 * 49152, layers=30, attn_width=576
    )


def test_shape_counts_every_linear_weight_of_the_blocks():
    config = tiny_config(vocab_size=100, eos_token_id=2, pad_token_id=2)
    model = AutoModelForCausalLM.from_config(config)
    shape = ModelShape.from_config(config)
    linear = [p for p in model.get_decoder().layers.parameters() if p.ndim == 2]
    assert shape.body_params == sum(p.numel() for p in linear)
    assert shape.head_params == model.get_output_embeddings().weight.numel()


def test_forward_flops_hand_computed():
    # 2 new tokens at positions 3 and 4 attend to 4 and 5 keys: 9 keys
    # body 2 * 10 * 2 = 40; attention 4 * 2 layers * 3 * 9 = 216; head 2 * 100 * 1 = 200
    assert forward_flops(TOY, 2, 3, 1) == 40 + 216 + 200


def test_group_flops_counts_the_prompt_once_hand_computed():
    # prompt of 3: keys 1 + 2 + 3 = 6 -> 2 * 10 * 3 + 4 * 2 * 3 * 6 = 60 + 144 = 204
    # completion of 2: feeds 1 token at position 3 (4 keys), head at 2 positions
    #   -> 2 * 10 + 4 * 2 * 3 * 4 + 2 * 100 * 2 = 20 + 96 + 400 = 516
    # completion of 1: feeds nothing, head at 1 position -> 200; empty completion: 0
    assert group_flops(TOY, 3, [2, 1, 0]) == 204 + 516 + 200


@given(st.integers(1, 50), st.integers(1, 50))
def test_one_completion_costs_its_whole_sequence(p, c):
    # the prompt pass plus the cached completion pass is one causal pass over p + c - 1 tokens
    assert group_flops(TOY, p, [c]) == forward_flops(TOY, p + c - 1, 0, c)


def test_batch_flops_sums_contiguous_groups():
    prompt_lens, completion_lens = [3, 3, 5, 5], [2, 1, 4, 0]
    expected = group_flops(TOY, 3, [2, 1]) + group_flops(TOY, 5, [4, 0])
    assert batch_flops(TOY, prompt_lens, completion_lens, 2) == expected
    with pytest.raises(ValueError, match="whole groups"):
        batch_flops(TOY, prompt_lens[:3], completion_lens[:3], 2)


def test_mfu_is_achieved_over_peak():
    # 2e9 FLOPs in 2 s = 1e9 FLOP/s against a 1e10 peak: 10%
    assert mfu(2e9, 2.0, 1e10) == pytest.approx(0.1)
    assert mfu(1.0, 0.0, 1e10) == 0.0
    assert TRAIN_FACTOR == 3


def test_matmul_peak_is_a_positive_rate():
    peak = matmul_peak(n=64, repeats=2)
    assert peak > 0 and math.isfinite(peak)


def test_matmul_peaks_measures_each_dtype():
    peaks = matmul_peaks(n=64, repeats=2)
    assert set(peaks) == {"float32", "bfloat16"}
    assert all(v > 0 and math.isfinite(v) for v in peaks.values())


def test_mfu_of_a_dtype_is_against_that_dtype_s_peak():
    # before: fp32 1e11, bf16 5e11; after: fp32 2e11, bf16 4e11 -> best 2e11 and 5e11
    peaks = best_peaks({"float32": 1e11, "bfloat16": 5e11}, {"float32": 2e11, "bfloat16": 4e11})
    assert peaks == {"float32": 2e11, "bfloat16": 5e11}
    # 1e12 FLOPs in 10 s = 1e11 FLOP/s: 50% of the fp32 peak, 20% of the bf16 peak
    assert mfu(1e12, 10.0, peak_for(peaks, "float32")) == pytest.approx(0.5)
    assert mfu(1e12, 10.0, peak_for(peaks, "bfloat16")) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="float16"):
        peak_for(peaks, "float16")
