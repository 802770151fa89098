"""The lean decode step (rollout/lean.py) computes what the model's own forward computes."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from dapo_rl.rollout import HFEngine
from dapo_rl.rollout.lean import LeanDecoder, can_prepack, unsupported
from tests.rollout.tiny_models import lora

SHAPE = dict(
    vocab_size=96,
    hidden_size=48,
    intermediate_size=80,
    num_hidden_layers=2,
    num_attention_heads=6,
    num_key_value_heads=2,
    max_position_embeddings=256,
    pad_token_id=0,
    eos_token_id=1,
)


def _model(kind: str, **extra):
    torch.manual_seed(0)
    if kind == "qwen2":  # biases on q, k and v
        return Qwen2ForCausalLM(Qwen2Config(**SHAPE, **extra)).eval()
    return LlamaForCausalLM(LlamaConfig(**SHAPE, **extra)).eval()


MODELS = {
    "llama": lambda: _model("llama"),
    "llama-untied-rope-scaled": lambda: _model(
        "llama",
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0},
    ),
    "qwen2": lambda: _model("qwen2"),
}


def _left_padded(rows: int = 3, width: int = 7):
    ids = torch.randint(
        2, SHAPE["vocab_size"], (rows, width), generator=torch.Generator().manual_seed(1)
    )
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # row 0 is left-padded
    mask[2, :1] = 0
    return ids.masked_fill(mask == 0, 0), mask


def _decode_both(model, steps: int = 5):
    """Logits of the model's forward and of the lean step, token by token (same tokens)."""
    ids, mask = _left_padded()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    with torch.no_grad():
        first = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache).logits
    lean = LeanDecoder(model, cache, ids.shape[1] + steps)
    tok, step_pos, attn = first[:, -1].argmax(-1), pos[:, -1:], mask
    ours, theirs = [], []
    for _ in range(steps):
        attn, step_pos = torch.cat([attn, attn.new_ones(len(attn), 1)], 1), step_pos + 1
        with torch.no_grad():
            want = model(
                input_ids=tok[:, None], attention_mask=attn, position_ids=step_pos, cache=cache
            ).logits[:, -1]
        theirs.append(want)
        ours.append(lean.step(tok, step_pos, attn))
        tok = want.argmax(-1)
    return torch.stack(ours), torch.stack(theirs)


@pytest.mark.parametrize("name", list(MODELS))
def test_lean_step_equals_the_models_forward_in_float32(name):
    model = MODELS[name]()
    assert unsupported(model) is None
    ours, theirs = _decode_both(model)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_lean_step_in_bfloat16_is_within_bfloat16_rounding():
    """bf16 rounds at ~4e-3 relative; both paths round differently (fused q/k/v, addmm)."""
    model = MODELS["qwen2"]().to(torch.bfloat16)
    ours, theirs = _decode_both(model)
    exact, _ = _decode_both(MODELS["qwen2"]())
    err_ours = (ours.float() - exact).abs().max()
    err_theirs = (theirs.float() - exact).abs().max()
    assert err_ours <= 2 * err_theirs + 1e-2, (err_ours, err_theirs)


def test_rows_leaving_the_batch_keep_their_cache_rows():
    model = MODELS["llama"]()
    ids, mask = _left_padded()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache)
    full, part = LeanDecoder(model, cache, 9), LeanDecoder(model, cache, 9)
    keep = torch.tensor([0, 2])
    part.select(keep)
    attn = torch.cat([mask, mask.new_ones(3, 1)], 1)
    tok = torch.tensor([5, 6, 7])
    torch.testing.assert_close(
        part.step(tok[keep], pos[keep, -1:] + 1, attn[keep]),
        full.step(tok, pos[:, -1:] + 1, attn)[keep],
    )


def test_the_engine_samples_the_same_tokens_with_and_without_it(tiny_model, tokenizer):
    prompts = ["What is 2 + 3?", "Say hi"]
    rollouts = []
    for lean in (True, False):
        engine = HFEngine(tiny_model, tokenizer, lean=lean)
        gen = torch.Generator().manual_seed(3)
        rollouts.append(engine.generate(prompts, n=3, max_new_tokens=6, generator=gen))
    a, b = rollouts
    assert torch.equal(a.completion_ids, b.completion_ids)
    torch.testing.assert_close(a.logp, b.logp, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: lora(MODELS["llama"](), r=2, target_modules=["q_proj"]), "LoRA"),
        (lambda: _model("llama", attention_bias=True), "attention biases"),
        (lambda: _model("llama", hidden_act="gelu"), "activation"),
        (lambda: _model("qwen2", use_sliding_window=True, sliding_window=8), "sliding"),
        (
            lambda: _model("llama", rope_parameters={"rope_type": "dynamic", "factor": 2.0}),
            "RoPE",
        ),
        (lambda: torch.nn.Linear(2, 2), "architecture"),
    ],
)
def test_models_it_cannot_decode_fall_back_with_a_reason(make, reason):
    assert reason in unsupported(make())


def test_the_engine_names_why_it_falls_back(tiny_model, tokenizer):
    assert HFEngine(tiny_model, tokenizer, lean=False).lean_off == "switched off"
    assert HFEngine(tiny_model, tokenizer).lean_off is None


@pytest.mark.skipif(
    not can_prepack(torch.zeros(1, dtype=torch.bfloat16)), reason="needs oneDNN (mkldnn) on CPU"
)
def test_prepacked_bf16_weights_give_the_same_logits():
    model = MODELS["qwen2"]().to(torch.bfloat16)
    ids, mask = _left_padded()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache)
    attn, step_pos, tok = torch.cat([mask, mask.new_ones(3, 1)], 1), pos[:, -1:] + 1, ids[:, -1]
    plain = LeanDecoder(model, cache, 9, prepack=False).step(tok, step_pos, attn)
    packed = LeanDecoder(model, cache, 9, prepack=True).step(tok, step_pos, attn)
    torch.testing.assert_close(packed, plain, atol=0, rtol=0)
