"""LoRA through PEFT on the tiny model: what trains, the reference policy, checkpoints."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

from dapo_rl.config import build  # noqa: E402
from dapo_rl.models import AdapterDisabled, add_lora, export_weights, load_model  # noqa: E402
from dapo_rl.rollout import HFEngine  # noqa: E402
from dapo_rl.train import checkpoint  # noqa: E402
from dapo_rl.train.loop import build_state, train  # noqa: E402
from dapo_rl.train.update import UpdateSettings, batched_logprobs, policy_update  # noqa: E402

G = 4
HERE = Path(__file__).parent


@pytest.fixture()
def lora_model():
    return add_lora(load_model("tiny-random", seed=0), rank=4, alpha=8.0, targets="all-linear")


@pytest.fixture()
def rollout(lora_model, tokenizer):
    engine = HFEngine(lora_model, tokenizer)
    prompts = ["What is 2 + 3?", "7 + 1?"]
    return engine.generate(
        prompts, n=G, max_new_tokens=8, generator=torch.Generator().manual_seed(3)
    )


def _settings(**kw) -> UpdateSettings:
    base = dict(norm_len=8, kl_coef=0.1, mini_batches=2, micro_batch_size=G, group_size=G)
    return UpdateSettings.from_config(build(), **{**base, **kw})


def _train(model, rollout, steps: int = 2):
    """A few updates with the KL term to the adapter-disabled reference (AdamW, lr 1e-2)."""
    s = _settings()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    ref = batched_logprobs(AdapterDisabled(model), rollout, s)
    adv = torch.randn(len(rollout), generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        old = batched_logprobs(model, rollout, s)
        out = policy_update(
            model,
            opt,
            sched,
            rollout,
            adv=adv,
            old_logp=old,
            loss_mask=rollout.mask,
            ref_logp=ref,
            s=s,
            generator=torch.Generator().manual_seed(0),
        )
    return out


def test_only_adapter_parameters_require_grad(lora_model):
    trainable = [n for n, p in lora_model.named_parameters() if p.requires_grad]
    frozen = [n for n, p in lora_model.named_parameters() if not p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert frozen and not any("lora_" in n for n in frozen)
    # 2 layers x 7 linear layers (q k v o gate up down) x (A, B); the LM head is not adapted
    assert len(trainable) == 2 * 7 * 2
    some = add_lora(load_model("tiny-random", seed=0), rank=2, alpha=4.0, targets="q_proj,v_proj")
    names = [n for n, p in some.named_parameters() if p.requires_grad]
    assert len(names) == 2 * 2 * 2 and all("q_proj" in n or "v_proj" in n for n in names)


def test_a_training_step_changes_only_the_adapter(lora_model, rollout):
    before = {n: p.detach().clone() for n, p in lora_model.named_parameters()}
    metrics = _train(lora_model, rollout)
    assert metrics["kl/mean"] > 0  # the adapter has moved the policy off the reference
    changed = [n for n, p in lora_model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all("lora_" in n for n in changed)


def test_reference_logprobs_are_the_base_models(lora_model, rollout):
    _train(lora_model, rollout)
    s = _settings()
    base = load_model("tiny-random", seed=0)
    ref = batched_logprobs(AdapterDisabled(lora_model), rollout, s)
    m = rollout.mask.bool()
    assert torch.allclose(ref[m], batched_logprobs(base, rollout, s)[m], atol=1e-6)
    policy = batched_logprobs(lora_model, rollout, s)
    assert float((policy - ref)[m].abs().max()) > 1e-4


def test_export_merges_the_adapter_without_touching_the_model(lora_model, rollout):
    _train(lora_model, rollout, steps=1)
    before = {n: p.detach().clone() for n, p in lora_model.named_parameters()}
    weights = export_weights(lora_model)
    merged = copy.deepcopy(lora_model).merge_and_unload().state_dict()
    assert weights.keys() == merged.keys()
    assert all(torch.allclose(weights[k], merged[k], atol=1e-6) for k in weights)
    assert all(torch.equal(p, before[n]) for n, p in lora_model.named_parameters())


def test_checkpoint_saves_and_restores_the_adapter(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))  # toy_rewards
    cfg = build(
        overrides={
            "model.name": "tiny-random",
            "model.lora_rank": 4,
            "model.lora_alpha": 8.0,
            "algo.kl_coef": 0.05,
            "run.dir": str(tmp_path / "run"),
            "run.progress": False,
            "rewards.fn": "toy_rewards:length_parity",
            "rollout.group_size": 4,
            "rollout.prompts_per_step": 2,
            "rollout.max_new_tokens": 8,
            "algo.overlong_buffer": 4,
            "algo.dynamic_sampling": False,
            "eval.size": 2,
            "train.micro_batch_size": 4,
            "train.steps": 1,
            "train.lr": 1e-2,
        }
    )
    run = train(cfg)
    saved = checkpoint.checkpoint_dirs(run)[-1] / "model"
    assert (saved / "adapter_model.safetensors").exists()
    assert not (saved / "model.safetensors").exists()  # the base weights are not copied
    from safetensors.torch import load_file

    adapter = load_file(saved / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())

    state = build_state(cfg)
    assert isinstance(state.ref_model, AdapterDisabled) and state.ref_model.model is state.model
    assert checkpoint.load_latest(run, state) == 1
    restored = dict(state.model.named_parameters())
    for key, value in adapter.items():
        name = key.replace(".weight", ".default.weight")
        assert torch.equal(restored[name], value), key
    base = load_model("tiny-random", seed=0).state_dict()
    inner = state.model.get_base_model().state_dict()
    for name, value in inner.items():
        if "lora_" not in name:
            assert torch.equal(value, base[name.replace(".base_layer.", ".")]), name
