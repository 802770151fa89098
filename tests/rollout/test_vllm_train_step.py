"""Training steps with the vLLM engine (a fake ``LLM``): the sampler sleeps for the update,
wakes its weights for the sync, and samples the next step from the trained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fake_vllm import FakeLLM, sampling_params

from dapo_rl.rollout.vllm_engine import VLLMEngine, VLLMSettings
from dapo_rl.train.loop import build_state
from dapo_rl.train.step import train_step

G = 4


@pytest.fixture()
def state(tmp_path, tokenizer, monkeypatch):
    from dapo_rl.config import build

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "train"))  # toy_rewards
    cfg = build(
        overrides={
            "model.name": "tiny-random",
            "run.dir": str(tmp_path),
            "rollout.group_size": G,
            "rollout.prompts_per_step": 2,
            "rollout.max_new_tokens": 8,
            "algo.overlong_buffer": 4,
            "rewards.fn": "toy_rewards:length_parity",  # right when the text length is even
            "eval.size": 4,
            "train.micro_batch_size": G,
            "train.recompute_old_logprobs": True,
            "train.lr": 1e-3,
        }
    )
    s = build_state(cfg)
    eos, a = tokenizer.eos_token_id, tokenizer("a", add_special_tokens=False)["input_ids"][0]
    llm = FakeLLM(enable_sleep_mode=True)
    # completion j is "a" * j then EOS: lengths 0-3, half of each group right, half wrong
    llm.script = lambda ids, j: ([a] * j + [eos], "stop")
    settings = VLLMSettings.from_config(cfg, model="unused", sleep_level=1)
    s.engine = VLLMEngine(tokenizer, settings, llm=llm, sampling_params=sampling_params)
    return s


def test_two_steps_sleep_for_the_update_and_sync_before_sampling_again(state):
    metrics = train_step(state)
    assert metrics["len/mean"] == pytest.approx(2.5)  # 1, 2, 3, 4 tokens
    assert metrics["acc/mean"] == pytest.approx(0.5)
    first = dict(state.engine.llm.model.loaded)
    train_step(state)
    n = len(first)
    step = [
        ("sleep", 1),  # after sampling, before the old log-probs and the update
        ("wake_up", ["weights"]),
        ("load_weights", n),
        ("reset_prefix_cache",),
    ]
    assert state.engine.llm.events == [
        ("generate", 2),
        *step,
        ("wake_up", ["kv_cache"]),  # the next step's sampling
        ("generate", 2),
        *step,
    ]
    # the sampler holds the trained weights, and they moved between the two syncs
    trained = {k: v.detach().to(torch.bfloat16) for k, v in state.model.named_parameters()}
    loaded = state.engine.llm.model.loaded
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)
    assert any(not torch.equal(first[k], loaded[k]) for k in trained)
