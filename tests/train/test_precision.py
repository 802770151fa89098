"""bfloat16 done with float32 master weights and a bf16 working copy (train/precision.py).

Tolerances, measured on the tiny model and this fixed batch (bf16 keeps 8 significant
bits, a relative step of 2^-8 ~ 0.4%): per-token log-probs within 0.01 of float32 (seen:
0.002), the loss within 1e-3 (seen: 3e-5), each weight's gradient within 3% of float32's in
relative L2 norm (seen: at most 1.1%).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
from tiny_run import comparable, tiny_cfg
from tiny_update import PROMPTS, G, make_rollout, settings

from dapo_rl.metrics import read_metrics
from dapo_rl.rollout import HFEngine
from dapo_rl.train import checkpoint
from dapo_rl.train.loop import build_state, train
from dapo_rl.train.precision import Precision
from dapo_rl.train.step import train_step
from dapo_rl.train.update import (
    UpdateSettings,
    batched_logprobs,
    completion_logprobs,
    policy_update,
)

HERE = Path(__file__).parent
BF16 = {"model.dtype": "bfloat16"}


@pytest.fixture(autouse=True)
def _toy_rewards_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture()
def rollout(tiny_model, tokenizer):
    return make_rollout(tiny_model, tokenizer)


def _update(model, opt, rollout, s, adv, old=None):
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return policy_update(
        model,
        opt,
        sched,
        rollout,
        adv=adv,
        old_logp=batched_logprobs(model, rollout, s) if old is None else old,
        loss_mask=rollout.mask,
        ref_logp=None,
        s=s,
        generator=torch.Generator().manual_seed(0),
    )


def test_working_copy_is_bf16_and_master_untouched(tiny_model):
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    p = Precision(tiny_model, torch.bfloat16)
    assert p.working is not tiny_model
    assert all(w.dtype == torch.bfloat16 for w in p.working.parameters())
    assert all(m.dtype == torch.float32 for m in tiny_model.parameters())
    assert all(torch.equal(m, before[n]) for n, m in tiny_model.named_parameters())
    # the rotary frequencies are buffers: they stay float32
    assert all(b.dtype == torch.float32 for b in p.working.buffers() if b.is_floating_point())
    # the tied LM head is still tied in the copy
    assert p.working.get_output_embeddings().weight is p.working.get_input_embeddings().weight
    fp32 = Precision(tiny_model)
    assert fp32.working is tiny_model


def test_loss_and_gradients_are_within_tolerance_of_float32(tiny_model, rollout):
    m = rollout.mask.bool()
    adv = torch.randn(len(rollout), generator=torch.Generator().manual_seed(1))
    reference = copy.deepcopy(tiny_model)
    lp32, _ = completion_logprobs(reference, rollout, temperature=1.0, share_prompt=True)
    loss32 = -(lp32 * adv[:, None])[m].sum() / m.sum()
    loss32.backward()
    p = Precision(tiny_model, torch.bfloat16)
    lp16, _ = completion_logprobs(p.working, rollout, temperature=1.0, share_prompt=True)
    assert lp16.dtype == torch.float32  # log-softmax of float32 logits
    loss16 = -(lp16 * adv[:, None])[m].sum() / m.sum()
    loss16.backward()
    assert float((lp16 - lp32)[m].abs().max()) < 1e-2
    assert float(loss16) == pytest.approx(float(loss32), abs=1e-3)
    assert all(w.grad is None for w in p.working.parameters())  # moved to the master
    pairs = zip(reference.named_parameters(), tiny_model.parameters(), strict=True)
    for (name, r), mp in pairs:
        assert mp.grad.dtype == torch.float32
        rel = float((mp.grad - r.grad).norm() / r.grad.norm())
        assert rel < 0.03, f"{name}: relative gradient error {rel:.4f}"


def test_micro_batch_gradients_accumulate_in_float32(tiny_model, rollout):
    # the master's gradient after two backward passes is the float32 sum of each one's
    p = Precision(tiny_model, torch.bfloat16)
    m = rollout.mask.bool()

    def backward(rows):
        lp, _ = completion_logprobs(
            p.working, rollout.select(rows), temperature=1.0, share_prompt=True
        )
        lp[m[rows]].sum().backward()

    alone = []
    for rows in (slice(0, G), slice(G, 2 * G)):
        tiny_model.zero_grad(set_to_none=True)
        backward(rows)
        alone.append([q.grad.clone() for q in tiny_model.parameters()])
    tiny_model.zero_grad(set_to_none=True)
    backward(slice(0, G))
    backward(slice(G, 2 * G))
    for a, b, q in zip(*alone, tiny_model.parameters(), strict=True):
        assert q.grad.dtype == torch.float32
        assert torch.equal(q.grad, a + b)


def test_master_weights_and_adamw_state_stay_float32(tiny_model, rollout):
    p = Precision(tiny_model, torch.bfloat16)
    opt = torch.optim.AdamW(tiny_model.parameters(), lr=1e-2)
    p.attach(opt)
    adv = torch.randn(len(rollout), generator=torch.Generator().manual_seed(1))
    before = [q.detach().clone() for q in tiny_model.parameters()]
    _update(p.working, opt, rollout, settings(mini_batches=3), adv)
    assert all(q.dtype == torch.float32 for q in tiny_model.parameters())
    assert any(not torch.equal(q, b) for q, b in zip(tiny_model.parameters(), before, strict=True))
    state = [opt.state[q] for q in tiny_model.parameters()]
    assert all(s["exp_avg"].dtype == s["exp_avg_sq"].dtype == torch.float32 for s in state)
    assert all(w.dtype == torch.bfloat16 and w.grad is None for w in p.working.parameters())


def test_working_copy_is_refreshed_once_per_optimizer_step(tiny_model, rollout):
    p = Precision(tiny_model, torch.bfloat16)
    opt = torch.optim.SGD(tiny_model.parameters(), lr=1e-2)
    p.attach(opt)
    adv = torch.randn(len(rollout), generator=torch.Generator().manual_seed(1))
    _update(p.working, opt, rollout, settings(mini_batches=3), adv)  # 3 groups: 3 steps
    assert p.refreshes == 3
    pairs = zip(p.working.parameters(), tiny_model.parameters(), strict=True)
    assert all(torch.equal(w, m.to(torch.bfloat16)) for w, m in pairs)
    # a skipped step (non-finite gradient) does not step, so it does not refresh either
    _update(p.working, opt, rollout, settings(), adv * float("nan"))
    assert p.refreshes == 3


def test_sampling_from_the_bf16_copy_gives_valid_rollouts(tiny_model, tokenizer):
    p = Precision(tiny_model, torch.bfloat16)
    engine = HFEngine(p.working, tokenizer)
    ro = engine.generate(
        PROMPTS, n=G, max_new_tokens=10, generator=torch.Generator().manual_seed(3)
    )
    assert len(ro) == len(PROMPTS) * G
    assert ro.logp.dtype == torch.float32 and bool(torch.isfinite(ro.logp).all())
    real = ro.mask.bool()
    assert bool((ro.logp[real] <= 0).all()) and bool((ro.logp[~real] == 0).all())
    assert torch.equal(ro.lengths, ro.mask.sum(1))
    assert bool(((ro.completion_ids >= 0) & (ro.completion_ids < len(tokenizer))).all())
    # mask is a prefix per row, and a row ends at its first EOS or at the limit
    assert bool((ro.mask[:, 1:] <= ro.mask[:, :-1]).all())
    ended = (ro.completion_ids == tokenizer.eos_token_id) & real
    assert torch.equal(ended.any(1), ~ro.truncated)
    # the sampler's log-probs are those the bf16 training forward assigns (within bf16 noise)
    lp, _ = completion_logprobs(p.working, ro, temperature=1.0, share_prompt=True)
    assert float((lp - ro.logp)[real].abs().max()) < 2e-2


def test_first_minibatch_ratio_is_one_with_recomputed_bf16_old_logprobs(tiny_model, rollout):
    # old log-probs recomputed by the same bf16 working copy: the whole rollout as one
    # micro-batch (rows shuffled) scores every token exactly as the recompute did
    p = Precision(tiny_model, torch.bfloat16)
    opt = torch.optim.SGD(tiny_model.parameters(), lr=0.0)
    p.attach(opt)
    adv = torch.randn(len(rollout), generator=torch.Generator().manual_seed(2))
    out = _update(p.working, opt, rollout, settings(), adv)
    assert out["clip/high_frac"] == 0 and out["clip/low_frac"] == 0
    expected = -(adv[:, None] * rollout.mask).sum() / rollout.mask.sum()
    assert out["loss/policy"] == pytest.approx(float(expected), rel=1e-6)


def test_a_bf16_run_trains_checkpoints_float32_and_resumes_exactly(tmp_path):
    every_step = {"eval.every": 0, "train.steps": 2, "run.checkpoint_every": 1, **BF16}
    done = train(tiny_cfg(tmp_path / "full", **every_step))
    from safetensors.torch import load_file

    saved = load_file(checkpoint.checkpoint_dirs(done)[-1] / "model" / "model.safetensors")
    assert saved and all(t.dtype == torch.float32 for t in saved.values())
    # resume from step 1: the working copy must follow the restored master weights
    resumed = tmp_path / "resumed"
    shutil.copytree(done, resumed)
    shutil.rmtree(checkpoint.checkpoint_dirs(resumed)[-1])
    train(tiny_cfg(resumed, **every_step, resume=True))
    assert comparable(read_metrics(resumed)) == comparable(read_metrics(done))


def test_a_bf16_step_refreshes_once_per_optimizer_step(tmp_path):
    state = build_state(tiny_cfg(tmp_path / "run", **BF16, **{"train.mini_batches_per_step": 2}))
    assert state.engine.model is state.precision.working is not state.model
    taken = [0]
    state.optimizer.register_step_post_hook(lambda *_: taken.__setitem__(0, taken[0] + 1))
    metrics = train_step(state)
    assert taken[0] == 2 and state.precision.refreshes == 2
    assert metrics["grad/skipped_steps"] == 0
    assert all(q.dtype == torch.float32 for q in state.model.parameters())
    assert state.optimizer.defaults["fused"]  # one pass per parameter (loop.build_state)


def test_fused_adamw_steps_the_master_as_the_default_adamw_does(tiny_model, rollout):
    # the fused kernel is the same arithmetic in one pass: equal weights and moments after
    # three bf16 steps, up to float32 rounding of the reordered operations
    adv = torch.randn(len(rollout), generator=torch.Generator().manual_seed(1))
    runs = []
    for fused in (False, True):
        master = copy.deepcopy(tiny_model)
        p = Precision(master, torch.bfloat16)
        opt = torch.optim.AdamW(master.parameters(), lr=1e-2, weight_decay=0.1, fused=fused)
        p.attach(opt)
        _update(p.working, opt, rollout, settings(mini_batches=3), adv)
        runs.append((master, opt, p))
    (m0, o0, p0), (m1, o1, p1) = runs
    for a, b in zip(m0.parameters(), m1.parameters(), strict=True):
        assert float((a - b).abs().max()) < 1e-6
        assert torch.allclose(o0.state[a]["exp_avg_sq"], o1.state[b]["exp_avg_sq"], rtol=1e-5)
    assert p0.refreshes == p1.refreshes == 3
    for w, m in zip(p1.working.parameters(), m1.parameters(), strict=True):
        assert torch.equal(w, m.to(torch.bfloat16))  # the refresh copied every weight


def test_fsdp_keeps_one_model_and_autocast(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", **BF16, **{"train.fsdp": True})
    model = torch.nn.Linear(2, 2)
    assert Precision.for_run(cfg, model).working is model
    assert UpdateSettings.from_config(cfg).autocast_dtype == torch.bfloat16
    assert UpdateSettings.from_config(tiny_cfg(tmp_path, **BF16)).autocast_dtype is None


def test_a_frozen_reference_model_is_cast_in_place(tiny_model):
    p = Precision(tiny_model, torch.bfloat16)
    ref = copy.deepcopy(tiny_model).requires_grad_(False)
    assert p.reference(ref) is ref
    assert all(q.dtype == torch.bfloat16 for q in ref.parameters())
    assert p.reference(None) is None


def test_lora_in_bf16_trains_the_float32_adapter(tmp_path):
    pytest.importorskip("peft")
    from dapo_rl.models import AdapterDisabled

    lora = {"model.lora_rank": 4, "model.lora_alpha": 8.0, "algo.kl_coef": 0.05}
    state = build_state(tiny_cfg(tmp_path / "run", **BF16, **lora))
    assert isinstance(state.ref_model, AdapterDisabled)
    assert state.ref_model.model is state.precision.working
    before = {n: q.detach().clone() for n, q in state.model.named_parameters()}
    train_step(state)
    assert state.precision.refreshes >= 1
    for n, q in state.model.named_parameters():
        assert q.dtype == torch.float32
        assert "lora_" in n or torch.equal(q, before[n]), n  # the base stays the reference
    assert any(not torch.equal(q, before[n]) for n, q in state.model.named_parameters())
    work = dict(state.precision.working.named_parameters())
    for n, q in state.model.named_parameters():
        assert work[n].dtype == torch.bfloat16
        if "lora_" in n:
            assert torch.equal(work[n], q.to(torch.bfloat16))
