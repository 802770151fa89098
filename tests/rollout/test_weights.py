"""Streaming the trainer's weights to an inference engine (``rollout/weights.py``).

The LoRA merge is checked against PEFT's own ``merge_and_unload`` on the tiny model, bit for
bit in float32; FSDP2-sharded parameters are checked on two ranks in test_vllm_dist.py.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from tiny_models import lora, untied

from dapo_rl.errors import DapoError
from dapo_rl.models import load_model
from dapo_rl.rollout.weights import hf_name, lora_scale, stream_weights


def test_names_lose_what_wrappers_add_and_adapter_tensors_are_dropped():
    cases = {
        "model.layers.0.mlp.up_proj.weight": "model.layers.0.mlp.up_proj.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight": (
            "model.layers.0.self_attn.q_proj.weight"
        ),
        "model.layers.1._checkpoint_wrapped_module.self_attn.o_proj.weight": (
            "model.layers.1.self_attn.o_proj.weight"
        ),
        "_orig_mod.model.norm.weight": "model.norm.weight",
        "_fsdp_wrapped_module.model.embed_tokens.weight": "model.embed_tokens.weight",
        "lm_head.modules_to_save.default.weight": "lm_head.weight",
        "lm_head.original_module.weight": None,
        "model.layers.0.self_attn.q_proj.lora_A.default.weight": None,
        "model.layers.0.self_attn.q_proj.lora_B.default.weight": None,
        "model.embed_tokens.lora_embedding_A.default": None,
    }
    assert {k: hf_name(k) for k in cases} == cases


def test_lora_scale_is_alpha_over_rank_or_over_its_root_with_rslora():
    assert lora_scale(4, 8.0, use_rslora=False) == 2.0  # 8 / 4
    assert lora_scale(4, 8.0, use_rslora=True) == 4.0  # 8 / sqrt(4)
    assert lora_scale(2, 4.0, use_rslora=True) == 4.0 / math.sqrt(2)


def test_a_plain_model_streams_its_parameters_detached_in_the_asked_dtype(tiny_model):
    pairs = list(stream_weights(tiny_model, torch.float32))
    params = dict(tiny_model.named_parameters())
    assert [n for n, _ in pairs] == list(params)
    assert all(torch.equal(t, params[n]) and not t.requires_grad for n, t in pairs)
    assert torch.is_grad_enabled()  # the stream's no_grad does not leak to the caller


@pytest.mark.parametrize(
    "config",
    [
        dict(r=2, lora_alpha=4.0, target_modules="all-linear"),
        dict(r=4, lora_alpha=8.0, target_modules=["q_proj", "v_proj"], use_rslora=True),
        dict(r=2, lora_alpha=2.0, target_modules=["o_proj", "lm_head"]),  # untied head adapted
    ],
)
def test_the_lora_stream_equals_peft_merge_and_unload_bit_for_bit(config):
    pytest.importorskip("peft")
    base = untied() if "lm_head" in config["target_modules"] else load_model("tiny-random")
    wrapped = lora(base, **config)
    before = {k: v.clone() for k, v in wrapped.state_dict().items()}
    streamed = list(stream_weights(wrapped, torch.float32))
    merged = dict(copy.deepcopy(wrapped).merge_and_unload().named_parameters())
    assert [n for n, _ in streamed] == list(merged) == list(dict(base.named_parameters()))
    assert all(torch.equal(t, merged[n]) for n, t in streamed)
    # only the target modules changed, and the trainer's model is untouched
    changed = {n for n, t in streamed if not torch.equal(t, base.get_parameter(n))}
    targets = config["target_modules"]
    if targets == "all-linear":  # every linear layer but the LM head
        assert changed == {n for n in merged if n.endswith("_proj.weight")}
    else:
        assert changed and all(n.split(".")[-2] in targets for n in changed)
    assert all(torch.equal(v, wrapped.state_dict()[k]) for k, v in before.items())


def test_a_lora_variant_that_does_not_merge_linearly_is_refused():
    pytest.importorskip("peft")
    dora = lora(
        load_model("tiny-random"), r=2, lora_alpha=4.0, target_modules=["q_proj"], use_dora=True
    )
    with pytest.raises(DapoError, match="self_attn.q_proj.*only vanilla LoRA"):
        list(stream_weights(dora))
