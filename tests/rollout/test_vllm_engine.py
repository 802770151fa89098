"""The vLLM engine's adapter logic against a fake ``LLM``, and truncated IS in the update.

vLLM itself needs a GPU; these tests inject ``fake_vllm.FakeLLM``, which follows vLLM
0.27-0.31's ``LLM`` API (its docstring lists the calls) and records every call and the
weights it is sent.
"""

from __future__ import annotations

import copy
import importlib.util
import math

import pytest
import torch
from fake_vllm import EOS, LIMIT, FakeLLM, logprob, sampling_params, script

from dapo_rl.config import build
from dapo_rl.errors import DapoError
from dapo_rl.models import load_model
from dapo_rl.rollout import HFEngine, make_engine
from dapo_rl.rollout import vllm_engine as ve
from dapo_rl.rollout.vllm_engine import VLLMEngine, VLLMSettings, to_rollout
from dapo_rl.train.update import UpdateSettings, batched_logprobs, policy_update

PAD = 0


class CharTokenizer:
    """One token per character (id = code point); EOS 2, padding 0."""

    eos_token_id, pad_token_id = EOS, PAD

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def _settings(**overrides) -> VLLMSettings:
    return VLLMSettings.from_config(
        build(), **{"model": "unused", "max_new_tokens": LIMIT, **overrides}
    )


def _engine(llm=None, tokenizer=None, **settings) -> VLLMEngine:
    s = _settings(**settings)
    llm = llm or FakeLLM(**s.llm_kwargs(rank=0, world=1))
    return VLLMEngine(tokenizer or CharTokenizer(), s, llm=llm, sampling_params=sampling_params)


def test_outputs_become_a_rollout_with_contiguous_groups_and_sampler_logprobs():
    engine = _engine()
    ro = engine.generate(["ab", "xyz"], n=3, max_new_tokens=LIMIT, temperature=0.7, top_p=0.9)
    ((prompts, params),) = engine.llm.calls
    assert prompts == [{"prompt_token_ids": [97, 98]}, {"prompt_token_ids": [120, 121, 122]}]
    assert vars(params) == {
        "n": 3,
        "max_tokens": LIMIT,
        "temperature": 0.7,
        "top_p": 0.9,
        "logprobs": 0,
        "stop_token_ids": [EOS],
        "detokenize": False,
    }
    assert ro.prompt_ids.shape == (6, 3) and ro.completion_ids.shape == (6, LIMIT)
    # prompts left-padded, each repeated for its group's 3 rows
    assert ro.prompt_ids[0].tolist() == [PAD, 97, 98] and ro.prompt_mask[0].tolist() == [0, 1, 1]
    assert ro.prompt_ids[3:].tolist() == [[120, 121, 122]] * 3
    for i, first in enumerate((97, 120)):
        for j in range(3):
            row = i * 3 + j
            tokens, _ = script([first], j)
            n = len(tokens)
            assert ro.completion_ids[row, :n].tolist() == tokens  # row i*n + j
            assert ro.completion_ids[row, n:].tolist() == [PAD] * (LIMIT - n)
            assert ro.mask[row].tolist() == [1] * n + [0] * (LIMIT - n)  # EOS included
            expected = [logprob(t) for t in tokens] + [0.0] * (LIMIT - n)
            assert ro.logp[row].tolist() == pytest.approx(expected)
    assert ro.lengths.tolist() == [3, LIMIT, LIMIT] * 2
    # truncated = no EOS: the row that ran to the limit, not the one with EOS at the limit
    assert ro.truncated.tolist() == [False, True, False] * 2


def test_prompts_are_encoded_exactly_as_the_hf_engine_does(tokenizer, tiny_model):
    prompts = ["What is 2 + 3?", "Sum 11 and 12."]
    hf_ids, hf_mask = HFEngine(tiny_model, tokenizer).encode(prompts)
    ours = _engine(tokenizer=tokenizer).encode(prompts)
    assert ours == [ids[m.bool()].tolist() for ids, m in zip(hf_ids, hf_mask, strict=True)]


def test_missing_logprobs_or_completions_are_refused():
    engine = _engine()
    engine.llm.with_logprobs = False
    with pytest.raises(ValueError, match="log-prob"):
        engine.generate(["a"], n=2, max_new_tokens=LIMIT)
    engine = _engine()
    engine.llm.n_override = 1
    with pytest.raises(ValueError, match="completions per prompt"):
        engine.generate(["a"], n=2, max_new_tokens=LIMIT)
    with pytest.raises(ValueError):
        to_rollout([[1], [2]], [], n=1, eos_id=EOS, pad_id=PAD)


def test_a_prompt_longer_than_the_context_is_refused_before_vllm_sees_it():
    engine = _engine(max_prompt_tokens=3)  # max_model_len 3 + LIMIT
    assert engine.generate(["abc"], n=1, max_new_tokens=LIMIT).prompt_ids.shape == (1, 3)
    with pytest.raises(DapoError, match="rollout.vllm_max_prompt_tokens"):
        engine.generate(["abc", "abcd"], n=1, max_new_tokens=LIMIT)
    with pytest.raises(DapoError, match="context of 8 tokens"):
        engine.generate(["abc"], n=1, max_new_tokens=LIMIT + 1)
    assert len(engine.llm.calls) == 1


# ---------------------------------------------------------------- weight sync and sleep mode


def _plain_bf16(model) -> dict:
    return {k: v.detach().to(torch.bfloat16) for k, v in model.named_parameters()}


def test_sync_streams_each_weight_once_in_bfloat16_then_drops_the_prefix_cache(tiny_model):
    engine = _engine()
    engine.sync_weights(tiny_model)
    loaded, expected = engine.llm.model.loaded, _plain_bf16(tiny_model)
    # named_parameters order, the tied LM head once (under the embeddings' name)
    assert engine.llm.model.order == list(expected)
    assert "lm_head.weight" not in loaded
    assert all(loaded[k].dtype == torch.bfloat16 for k in loaded)
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert engine.llm.model.peak_alive == 1  # one tensor at a time, never a state dict
    assert engine.llm.events == [("load_weights", len(expected)), ("reset_prefix_cache",)]


def test_the_fake_engine_sees_a_whole_state_dict_handed_over_at_once(tiny_model):
    """Negative control for ``peak_alive``: the old way (a dict of every tensor) is caught."""
    llm = FakeLLM()
    everything = list(_plain_bf16(tiny_model).items())
    llm.apply_model(lambda m: m.load_weights(iter(everything)))
    assert llm.model.peak_alive == len(everything) == 20


def test_sleep_then_update_wakes_weights_syncs_then_wakes_the_kv_cache(tiny_model):
    engine = _engine(sleep_level=1)
    assert engine.llm.kwargs["enable_sleep_mode"] is True
    engine.generate(["ab"], n=1, max_new_tokens=LIMIT)
    engine.sleep()  # before the update
    engine.sleep()  # already asleep: nothing more
    engine.sync_weights(tiny_model)  # after it
    engine.generate(["ab"], n=1, max_new_tokens=LIMIT)
    n = len(_plain_bf16(tiny_model))
    assert engine.llm.events == [
        ("generate", 1),
        ("sleep", 1),
        ("wake_up", ["weights"]),
        ("load_weights", n),
        ("reset_prefix_cache",),
        ("wake_up", ["kv_cache"]),
        ("generate", 1),
    ]


def test_level_two_sleep_needs_a_sync_before_sampling_and_level_zero_never_sleeps(tiny_model):
    engine = _engine(sleep_level=2)
    engine.sleep()
    with pytest.raises(DapoError, match="sleep level 2"):
        engine.generate(["ab"], n=1, max_new_tokens=LIMIT)
    engine.sync_weights(tiny_model)  # refills the dropped weights
    engine.generate(["ab"], n=1, max_new_tokens=LIMIT)
    assert [e[0] for e in engine.llm.events] == [
        "sleep",
        "wake_up",
        "load_weights",
        "reset_prefix_cache",
        "wake_up",
        "generate",
    ]
    level1 = _engine(sleep_level=1)  # level 1 kept the weights on the CPU: waking suffices
    level1.sleep()
    level1.generate(["ab"], n=1, max_new_tokens=LIMIT)
    assert level1.llm.events[1:] == [
        ("wake_up", ["weights"]),
        ("wake_up", ["kv_cache"]),
        ("generate", 1),
    ]
    off = _engine(sleep_level=0)
    off.sleep()
    assert off.llm.kwargs["enable_sleep_mode"] is False and off.llm.events == []


def test_sync_merges_a_lora_adapter_under_the_plain_names():
    pytest.importorskip("peft")
    from dapo_rl.models import add_lora

    plain = load_model("tiny-random", seed=0)
    lora = add_lora(copy.deepcopy(plain), rank=2, alpha=4.0, targets="all-linear")
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    engine = _engine()
    engine.sync_weights(lora)
    loaded, merged = engine.llm.model.loaded, _plain_bf16(copy.deepcopy(lora).merge_and_unload())
    assert engine.llm.model.order == list(_plain_bf16(plain))
    assert all(torch.equal(loaded[k], merged[k]) for k in merged)  # PEFT's own merge
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(loaded[q], _plain_bf16(plain)[q])  # the adapter is merged in
    assert engine.llm.model.peak_alive == 1


# ---------------------------------------------------------------- config -> vLLM


def _vllm_cfg(**overrides):
    base = {
        "model.name": "smollm2-135m-instruct",
        "rollout.engine": "vllm",
        "train.recompute_old_logprobs": True,
    }
    return build(overrides={**base, **overrides})


def test_config_becomes_the_llm_keywords(monkeypatch):
    monkeypatch.setattr("dapo_rl.models.resolve", lambda name: f"/models/{name}")
    cfg = _vllm_cfg(
        **{
            "rollout.vllm_tp": 2,
            "rollout.vllm_memory": 0.4,
            "rollout.vllm_sleep_level": 2,
            "rollout.vllm_max_prompt_tokens": 300,
            "rollout.max_new_tokens": 100,
            "eval.max_new_tokens": 200,  # the longer limit sizes the context
            "model.dtype": "float32",  # vLLM runs in bfloat16 all the same
            "run.seed": 7,
            "train.fsdp": True,  # no longer refused with vLLM
        }
    )
    s = VLLMSettings.from_config(cfg)
    assert s.max_model_len == 500
    assert s.llm_kwargs(rank=3, world=4) == {
        "model": "/models/smollm2-135m-instruct",
        "tensor_parallel_size": 2,
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.4,
        "max_model_len": 500,
        "enable_sleep_mode": True,
        "seed": 8,  # ranks 2 and 3 form engine 1
        "enable_prefix_caching": True,
        "logprobs_mode": "processed_logprobs",
        "distributed_executor_backend": "external_launcher",
    }
    assert "distributed_executor_backend" not in VLLMSettings.from_config(_vllm_cfg()).llm_kwargs(
        rank=0, world=1
    )
    with pytest.raises(DapoError, match="must divide the number of processes"):
        s.llm_kwargs(rank=0, world=3)


def test_make_engine_builds_llm_with_those_keywords(monkeypatch, tokenizer):
    monkeypatch.setattr("dapo_rl.models.resolve", lambda name: f"/models/{name}")
    monkeypatch.setattr(ve, "start_llm", lambda kwargs: FakeLLM(**kwargs))  # a name typo fails
    cfg = _vllm_cfg(**{"rollout.vllm_sleep_level": 0, "run.seed": 3})
    engine = make_engine(cfg, None, tokenizer)
    assert engine.llm.kwargs == {
        **VLLMSettings.from_config(cfg).llm_kwargs(rank=0, world=1),
        "distributed_executor_backend": None,
    }
    assert engine.llm.kwargs["max_model_len"] == 1024 + 64 and engine.tp_group is None
    with pytest.raises(DapoError, match="vllm_tp=2 must divide"):
        make_engine(_vllm_cfg(**{"rollout.vllm_tp": 2}), None, tokenizer)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_engine_without_vllm_fails_with_an_install_hint(tiny_model, tokenizer):
    with pytest.raises(DapoError, match="dapo-rl\\[vllm\\]"):
        make_engine(_vllm_cfg(), tiny_model, tokenizer)


def test_vllm_and_tis_settings_are_validated():
    with pytest.raises(DapoError, match="recompute_old_logprobs"):
        build(overrides={"algo.tis_cap": 2.0})
    with pytest.raises(DapoError, match="recompute_old_logprobs"):
        build(overrides={"rollout.engine": "vllm"})
    with pytest.raises(DapoError, match="tiny-random"):
        build(
            overrides={
                "model.name": "tiny-random",
                "rollout.engine": "vllm",
                "train.recompute_old_logprobs": True,
            }
        )
    with pytest.raises(DapoError, match="tis_cap"):
        build(overrides={"algo.tis_cap": 0.5, "train.recompute_old_logprobs": True})


# ---------------------------------------------------------------- truncated IS in the update


def _update(model, rollout, *, tis_cap):
    s = UpdateSettings.from_config(
        build(),
        norm_len=8,
        mini_batches=1,
        micro_batch_size=8,
        max_grad_norm=1e9,
        group_size=4,
        tis_cap=tis_cap,
    )
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    old = batched_logprobs(model, rollout, s)  # the trainer's: on-policy, ratio 1
    batch = copy.copy(rollout)
    batch.logp = (old - math.log(2)) * rollout.mask  # the sampler gave each token half
    adv = torch.linspace(-1, 1, len(rollout))
    metrics = policy_update(
        model,
        opt,
        sched,
        batch,
        adv=adv,
        old_logp=old,
        loss_mask=rollout.mask,
        ref_logp=None,
        s=s,
        generator=torch.Generator().manual_seed(0),
    )
    return model, metrics, adv


def test_truncated_is_weight_scales_the_policy_loss_and_gradient(tiny_model, tokenizer):
    rollout = HFEngine(tiny_model, tokenizer).generate(
        ["What is 2 + 3?", "7 + 1?"],
        n=4,
        max_new_tokens=6,
        generator=torch.Generator().manual_seed(0),
    )
    plain, m_plain, adv = _update(tiny_model, rollout, tis_cap=None)
    tis, m_tis, _ = _update(tiny_model, rollout, tis_cap=1.5)
    # pi_old / pi_sampler = 2 on every token, capped at 1.5: the on-policy token-mean loss
    # -mean(A) is scaled by 1.5, and so is the SGD step
    mask = rollout.mask.float()
    expected = -(adv[:, None] * mask).sum() / mask.sum()
    assert m_plain["loss/policy"] == pytest.approx(float(expected), abs=1e-5)
    assert m_tis["loss/policy"] == pytest.approx(1.5 * float(expected), abs=1e-5)
    for p0, a, b in zip(tiny_model.parameters(), plain.parameters(), tis.parameters(), strict=True):
        assert torch.allclose(b - p0, 1.5 * (a - p0), atol=1e-6, rtol=1e-4)
    # every token's ratio 2 is outside [1/1.5, 1.5]; k3 = 2 - ln 2 - 1 per token
    assert m_tis["mismatch/out_of_range_frac"] == pytest.approx(1.0)
    assert m_tis["mismatch/kl"] == pytest.approx(2 - math.log(2) - 1, abs=1e-5)
    assert "mismatch/out_of_range_frac" not in m_plain
