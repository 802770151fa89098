"""The vLLM engine's adapter logic with a fake ``LLM``, and truncated IS in the update.

vLLM itself needs a GPU; these tests inject a stand-in that returns vLLM-shaped outputs
(``RequestOutput.outputs[j]`` with ``index``, ``token_ids``, ``logprobs``, ``finish_reason``)
and records the weights it is given.
"""

from __future__ import annotations

import copy
import importlib.util
import math
from types import SimpleNamespace

import pytest
import torch

from dapo_rl.config import build
from dapo_rl.errors import DapoError
from dapo_rl.models import load_model
from dapo_rl.rollout import HFEngine, make_engine
from dapo_rl.rollout.vllm_engine import VLLMEngine, to_rollout
from dapo_rl.train.update import UpdateSettings, batched_logprobs, policy_update

EOS, PAD, LIMIT = 2, 0, 5


class CharTokenizer:
    """One token per character (id = code point); EOS 2, padding 0."""

    eos_token_id, pad_token_id = EOS, PAD

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def _script(prompt_ids, j):
    """Completion j of a prompt: 0 ends with EOS after 3 tokens; 1 runs to the limit without
    EOS; 2 puts EOS exactly at the limit. Token values encode (first prompt char, j)."""
    base = 1000 * prompt_ids[0] + 10 * j
    match j:
        case 0:
            return [base + 1, base + 2, EOS], "stop"
        case 1:
            return [base + k for k in range(1, LIMIT + 1)], "length"
        case _:
            return [base + k for k in range(1, LIMIT)] + [EOS], "stop"


def _logprob(token: int) -> float:
    return -((token % 97) + 1) / 100  # a distinct, recognisable value per token


class FakeLLM:
    """Stands in for ``vllm.LLM``: scripted completions, recorded calls and weight loads."""

    def __init__(self, with_logprobs: bool = True, n_override: int | None = None):
        self.calls, self.loaded, self.cache_resets = [], None, 0
        self.with_logprobs, self.n_override = with_logprobs, n_override
        runner = SimpleNamespace(model=SimpleNamespace(load_weights=self._load))
        worker = SimpleNamespace(model_runner=runner)
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=worker))

    def _load(self, weights):
        self.loaded = dict(weights)

    def reset_prefix_cache(self):
        self.cache_resets += 1

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        outputs = []
        for p in prompts:
            completions = []
            for j in range(self.n_override or params["n"]):
                tokens, reason = _script(p["prompt_token_ids"], j)
                # the sampled token's log-prob plus a decoy, as vLLM may return top-k entries
                logprobs = [
                    {t: SimpleNamespace(logprob=_logprob(t)), t + 1: SimpleNamespace(logprob=-9.0)}
                    for t in tokens
                ]
                completions.append(
                    SimpleNamespace(
                        index=j,
                        token_ids=tokens,
                        logprobs=logprobs if self.with_logprobs else None,
                        finish_reason=reason,
                    )
                )
            outputs.append(SimpleNamespace(outputs=completions[::-1]))  # order not relied on
        return outputs


def _engine(llm=None, tokenizer=None) -> VLLMEngine:
    return VLLMEngine(
        "unused",
        tokenizer or CharTokenizer(),
        llm=llm or FakeLLM(),
        sampling_params=lambda **kw: kw,
    )


def test_outputs_become_a_rollout_with_contiguous_groups_and_sampler_logprobs():
    engine = _engine()
    ro = engine.generate(["ab", "xyz"], n=3, max_new_tokens=LIMIT, temperature=0.7, top_p=0.9)
    ((prompts, params),) = engine.llm.calls
    assert prompts == [{"prompt_token_ids": [97, 98]}, {"prompt_token_ids": [120, 121, 122]}]
    assert params == {
        "n": 3,
        "max_tokens": LIMIT,
        "temperature": 0.7,
        "top_p": 0.9,
        "logprobs": 0,
        "stop_token_ids": [EOS],
    }
    assert ro.prompt_ids.shape == (6, 3) and ro.completion_ids.shape == (6, LIMIT)
    # prompts left-padded, each repeated for its group's 3 rows
    assert ro.prompt_ids[0].tolist() == [PAD, 97, 98] and ro.prompt_mask[0].tolist() == [0, 1, 1]
    assert ro.prompt_ids[3:].tolist() == [[120, 121, 122]] * 3
    for i, first in enumerate((97, 120)):
        for j in range(3):
            row = i * 3 + j
            tokens, _ = _script([first], j)
            n = len(tokens)
            assert ro.completion_ids[row, :n].tolist() == tokens  # row i*n + j
            assert ro.completion_ids[row, n:].tolist() == [PAD] * (LIMIT - n)
            assert ro.mask[row].tolist() == [1] * n + [0] * (LIMIT - n)  # EOS included
            expected = [_logprob(t) for t in tokens] + [0.0] * (LIMIT - n)
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
    with pytest.raises(ValueError, match="log-prob"):
        _engine(FakeLLM(with_logprobs=False)).generate(["a"], n=2, max_new_tokens=LIMIT)
    with pytest.raises(ValueError, match="completions per prompt"):
        _engine(FakeLLM(n_override=1)).generate(["a"], n=2, max_new_tokens=LIMIT)
    with pytest.raises(ValueError):
        to_rollout([[1], [2]], [], n=1, eos_id=EOS, pad_id=PAD)


def test_sync_weights_loads_the_trainers_weights_and_drops_the_prefix_cache(tiny_model):
    engine = _engine()
    engine.sync_weights(tiny_model)
    state = tiny_model.state_dict()
    assert engine.llm.loaded.keys() == state.keys()
    assert all(torch.equal(engine.llm.loaded[k], state[k]) for k in state)
    assert engine.llm.cache_resets == 1


def test_sync_weights_merges_a_lora_adapter_under_the_plain_names():
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
    loaded = engine.llm.loaded
    assert loaded.keys() == plain.state_dict().keys()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(loaded[q], plain.state_dict()[q])  # the adapter is merged in
    embed = "model.embed_tokens.weight"  # not adapted: the base weight itself
    assert torch.equal(loaded[embed], plain.state_dict()[embed])


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_engine_without_vllm_fails_with_an_install_hint(tiny_model, tokenizer):
    cfg = build(
        overrides={
            "model.name": "smollm2-135m-instruct",
            "rollout.engine": "vllm",
            "train.recompute_old_logprobs": True,
        }
    )
    with pytest.raises(DapoError, match="dapo-rl\\[vllm\\]"):
        make_engine(cfg, tiny_model, tokenizer)


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
