"""The memory-bounded training forward gives today's numbers: logits in chunks, activation
checkpointing and token-budget micro-batches, each on and off (float32, tiny model)."""

from __future__ import annotations

import copy

import pytest
import torch

from dapo_rl.config import build
from dapo_rl.models import enable_grad_checkpointing
from dapo_rl.rollout import HFEngine, Rollout
from dapo_rl.train.update import (
    UpdateSettings,
    batched_logprobs,
    completion_logprobs,
    pack,
    policy_update,
)

G = 4
PROMPTS = ["What is 2 + 3?", "Sum 11 and 12 and tell me, please.", "7 + 1?"]


@pytest.fixture(scope="module")
def setup():
    from dapo_rl.models import load_model, load_tokenizer

    torch.manual_seed(0)
    model, tok = load_model("tiny-random", seed=0), load_tokenizer("tiny-random")
    ro = HFEngine(model, tok).generate(
        PROMPTS, n=G, max_new_tokens=10, generator=torch.Generator().manual_seed(3)
    )
    return model, ro


def _logp_and_grads(model, ro, **kw):
    """Log-probs, entropy and the gradient of a weighted sum of the log-probs."""
    model = copy.deepcopy(model)
    if kw.pop("checkpointing", False):
        enable_grad_checkpointing(model)
    model.train()
    m = ro.mask.bool()
    lp, ent = completion_logprobs(model, ro, temperature=0.7, entropy=True, **kw)
    w = torch.linspace(-1, 2, lp.numel()).view_as(lp)
    (lp * w)[m].sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return lp[m].detach(), ent[m], grads


def _same(a, b):
    assert torch.allclose(a[0], b[0], atol=1e-5, rtol=1e-5)
    assert torch.allclose(a[1], b[1], atol=1e-4)
    assert a[2].keys() == b[2].keys() and len(a[2]) > 0
    for name in a[2]:
        assert torch.allclose(a[2][name], b[2][name], atol=1e-6, rtol=1e-4), name


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("chunk", [7, 32])
def test_logits_in_chunks_give_the_same_logprobs_and_gradients(setup, share, chunk):
    model, ro = setup
    _same(
        _logp_and_grads(model, ro, share_prompt=share),
        _logp_and_grads(model, ro, share_prompt=share, logits_chunk=chunk),
    )


@pytest.mark.parametrize("share", [False, True])
def test_activation_checkpointing_gives_the_same_logprobs_and_gradients(setup, share):
    # with the shared prompt the decoder layers keep their (replay-safe) cache while being
    # re-run in the backward pass; a cache that appended again would change the gradients
    model, ro = setup
    _same(
        _logp_and_grads(model, ro, share_prompt=share),
        _logp_and_grads(model, ro, share_prompt=share, checkpointing=True, logits_chunk=16),
    )


def test_activation_checkpointing_with_lora_gives_the_same_adapter_gradients(setup):
    pytest.importorskip("peft", reason="LoRA needs peft (the test extra)")
    from dapo_rl.models import add_lora

    model, ro = setup
    torch.manual_seed(1)
    lora = add_lora(copy.deepcopy(model), rank=4, alpha=8.0, targets="all-linear")
    for name, p in lora.named_parameters():  # B = 0 at init: give the adapter a real effect
        if "lora_B" in name:
            p.data.normal_(0, 0.1)
    _same(
        _logp_and_grads(lora, ro, share_prompt=True),
        _logp_and_grads(lora, ro, share_prompt=True, checkpointing=True),
    )


def test_chunked_logprobs_without_gradients_match(setup):
    model, ro = setup
    m = ro.mask.bool()
    with torch.no_grad():
        a, _ = completion_logprobs(model, ro, temperature=1.0)
        b, _ = completion_logprobs(model, ro, temperature=1.0, logits_chunk=5)
    assert torch.allclose(a[m], b[m], atol=1e-5)


def _settings(**kw):
    base = dict(norm_len=10, mini_batches=2, micro_batch_size=12, max_grad_norm=1e9, group_size=G)
    return UpdateSettings.from_config(build(), **{**base, **kw})


def _sgd_step(model, ro, s):
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    old = batched_logprobs(model, ro, s)
    noise = torch.randn(old.shape, generator=torch.Generator().manual_seed(0))
    adv = torch.randn(len(ro), generator=torch.Generator().manual_seed(1))
    metrics = policy_update(
        model,
        opt,
        sched,
        ro,
        adv=adv,
        old_logp=old + 0.3 * noise * ro.mask,
        loss_mask=ro.mask,
        ref_logp=None,
        s=s,
        generator=torch.Generator().manual_seed(0),
    )
    return torch.cat([p.detach().flatten() for p in model.parameters()]), metrics


@pytest.mark.parametrize("share", [True, False])
def test_token_budget_micro_batches_give_the_same_step_as_one_batch(setup, share):
    # 40 tokens: every group (4 rows of up to ~20 prompt + 10 completion tokens) is too big,
    # so groups are split into rows and some micro-batches hold rows of two groups
    model, ro = setup
    whole, m1 = _sgd_step(model, ro, _settings(share_prompt=share, logits_chunk=0))
    split, m2 = _sgd_step(model, ro, _settings(share_prompt=share, max_tokens=40, logits_chunk=9))
    assert m1["loss/policy"] == pytest.approx(m2["loss/policy"], rel=1e-4, abs=1e-6)
    assert torch.allclose(whole, split, atol=1e-5, rtol=1e-4)
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float((whole - start).abs().max()) > 1e-3


def _rollout(prompt_lens, completion_lens) -> Rollout:
    rows, tp, tc = len(prompt_lens), max(prompt_lens), max(completion_lens)
    pm, cm = torch.zeros(rows, tp, dtype=torch.long), torch.zeros(rows, tc, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_lens, completion_lens, strict=True)):
        pm[i, tp - p :], cm[i, :c] = 1, 1
    z = torch.zeros(rows, dtype=torch.long)
    return Rollout(pm.clone(), pm, cm.clone(), cm, torch.zeros(rows, tc), z, z.bool())


def test_pack_hand_computed():
    # two groups of 2: prompts of 3 tokens; completions 4, 2 | 6, 1
    ro = _rollout([3, 3, 3, 3], [4, 2, 6, 1])
    rows = torch.arange(4)
    # shared: group 0 costs 1 x 3 + 2 x 4 = 11, group 1 1 x 3 + 2 x 6 = 15, both
    # 2 x 3 + 4 x 6 = 30. A budget of 15 holds each group; 14 splits group 1 into rows
    # (3 + 6 = 9 and 3 + 1 = 4: together 3 + 2 x 6 = 15 > 14)
    got = pack(rows, ro, max_rows=8, max_tokens=30, group=2)
    assert [m.tolist() for m in got] == [[0, 1, 2, 3]]
    got = pack(rows, ro, max_rows=8, max_tokens=15, group=2)
    assert [m.tolist() for m in got] == [[0, 1], [2, 3]]
    got = pack(rows, ro, max_rows=8, max_tokens=14, group=2)
    assert [m.tolist() for m in got] == [[0, 1], [2], [3]]
    # not shared: every row pays its prompt: row costs 7, 5, 9, 4; rows 0+1: 2 x 7 = 14
    got = pack(rows, ro, max_rows=8, max_tokens=14, group=1)
    assert [m.tolist() for m in got] == [[0, 1], [2], [3]]
    # a row alone above the budget is its own micro-batch; the row cap binds too
    got = pack(rows, ro, max_rows=1, max_tokens=5, group=1)
    assert [m.tolist() for m in got] == [[0], [1], [2], [3]]
    # the order of a shuffled mini-batch is kept
    got = pack(torch.tensor([2, 3, 0, 1]), ro, max_rows=8, max_tokens=15, group=2)
    assert [m.tolist() for m in got] == [[2, 3], [0, 1]]


def test_logits_chunk_bounds_the_peak_memory_of_a_training_forward(setup):
    # measured, not timed: the bytes of live tensors at the peak of one forward + backward,
    # with the (rows x 10 x 49152) float32 logits built whole or 8 positions at a time
    from dapo_rl.memory import PeakTensorBytes

    model, ro = setup

    def peak(chunk: int) -> int:
        m = copy.deepcopy(model)
        with PeakTensorBytes() as tracker:
            lp, _ = completion_logprobs(m, ro, temperature=1.0, logits_chunk=chunk)
            lp[ro.mask.bool()].sum().backward()
        return tracker.peak

    whole, chunked = peak(0), peak(8)
    logits = ro.mask.shape[0] * ro.mask.shape[1] * model.config.vocab_size * 4
    assert whole > 2 * logits  # logits and their log-softmax are alive at once
    assert chunked < whole - logits  # what remains: weight gradients, hidden states
