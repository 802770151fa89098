"""The policy update on the tiny model: prompt sharing, micro-batching and ratio conventions."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_update import G, make_rollout, settings

from dapo_rl.train.update import (
    batched_logprobs,
    by_length,
    completion_logprobs,
    policy_update,
)


@pytest.fixture()
def rollout(tiny_model, tokenizer):
    return make_rollout(tiny_model, tokenizer)


def test_shared_prompt_gives_the_same_logprobs_and_gradients(tiny_model, rollout):
    m = rollout.mask.bool()
    lp_full, ent_full = completion_logprobs(tiny_model, rollout, temperature=1.0, entropy=True)
    (lp_full[m].sum()).backward()
    g_full = [p.grad.clone() for p in tiny_model.parameters()]
    tiny_model.zero_grad()
    lp_shared, ent_shared = completion_logprobs(
        tiny_model, rollout, temperature=1.0, entropy=True, share_prompt=True
    )
    (lp_shared[m].sum()).backward()
    assert torch.allclose(lp_full[m], lp_shared[m], atol=1e-5)
    assert torch.allclose(ent_full[m], ent_shared[m], atol=1e-4)
    for a, p in zip(g_full, tiny_model.parameters(), strict=True):
        assert torch.allclose(a, p.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("rows", [slice(0, 6), slice(3, 7), slice(2, 3)])
def test_shared_prompt_of_partial_groups_gives_the_same_logprobs(tiny_model, rollout, rows):
    # a group and part of the next (0..5), rows straddling two groups (3..6), one row: each
    # run of rows with one prompt encodes it once
    sub = rollout.select(rows)
    m = sub.mask.bool()
    plain, _ = completion_logprobs(tiny_model, sub, temperature=1.0)
    shared, _ = completion_logprobs(tiny_model, sub, temperature=1.0, share_prompt=True)
    assert torch.allclose(plain[m], shared[m], atol=1e-5)


def _one_sgd_step(model, rollout, s, adv):
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)  # update = -grad: exposes any scaling error
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    old = batched_logprobs(model, rollout, s)
    # perturb old log-probs so ratios are away from 1 and both clip sides bind somewhere
    old = (
        old
        + 0.3 * torch.randn(old.shape, generator=torch.Generator().manual_seed(0)) * rollout.mask
    )
    metrics = policy_update(
        model,
        opt,
        sched,
        rollout,
        adv=adv,
        old_logp=old,
        loss_mask=rollout.mask,
        ref_logp=None,
        s=s,
        generator=torch.Generator().manual_seed(0),
    )
    return model, metrics


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
@pytest.mark.parametrize("share", [True, False])
def test_micro_batches_give_the_same_step_as_one_batch(tiny_model, rollout, mode, share):
    adv = torch.randn(len(rollout), generator=torch.Generator().manual_seed(1))
    whole, m1 = _one_sgd_step(tiny_model, rollout, settings(loss_agg=mode, share_prompt=share), adv)
    split, m2 = _one_sgd_step(
        tiny_model, rollout, settings(loss_agg=mode, share_prompt=share, micro_batch_size=G), adv
    )
    assert m1["clip/high_frac"] > 0 or m1["clip/low_frac"] > 0
    assert m1["loss/policy"] == pytest.approx(m2["loss/policy"], rel=1e-4, abs=1e-6)
    for a, b in zip(whole.parameters(), split.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    moved = sum(
        float((a - b).detach().abs().sum())
        for a, b in zip(whole.parameters(), tiny_model.parameters(), strict=True)
    )
    assert moved > 0


def test_first_minibatch_is_on_policy(tiny_model, rollout):
    # with old log-probs from the current weights, ratio == 1: nothing is clipped, and the
    # token-mean loss is -mean(A) over tokens
    s = settings()
    model = copy.deepcopy(tiny_model)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    adv = torch.randn(len(rollout), generator=torch.Generator().manual_seed(2))
    old = batched_logprobs(model, rollout, s)
    out = policy_update(
        model,
        opt,
        sched,
        rollout,
        adv=adv,
        old_logp=old,
        loss_mask=rollout.mask,
        ref_logp=None,
        s=s,
        generator=torch.Generator().manual_seed(0),
    )
    assert out["clip/high_frac"] == 0 and out["clip/low_frac"] == 0
    expected = -(adv[:, None] * rollout.mask).sum() / rollout.mask.sum()
    assert out["loss/policy"] == pytest.approx(float(expected), abs=1e-5)


def test_masked_out_rows_do_not_move_the_weights(tiny_model, rollout):
    # overlong filtering zeroes whole rows of the loss mask: those rows' advantages are irrelevant
    s = settings()
    loss_mask = rollout.mask.clone()
    loss_mask[:G] = 0  # drop the first group
    outs = []
    for first_adv in (1.0, -5.0):
        model = copy.deepcopy(tiny_model)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        adv = torch.ones(len(rollout))
        adv[:G] = first_adv
        old = batched_logprobs(model, rollout, s)
        policy_update(
            model,
            opt,
            sched,
            rollout,
            adv=adv,
            old_logp=old,
            loss_mask=loss_mask,
            ref_logp=None,
            s=s,
            generator=torch.Generator().manual_seed(0),
        )
        outs.append(model)
    for a, b in zip(outs[0].parameters(), outs[1].parameters(), strict=True):
        assert torch.equal(a, b)


def test_by_length_orders_rows_and_whole_groups_longest_first():
    lengths = torch.tensor([3, 9, 1, 5, 5, 2])
    # rows: lengths of rows 4, 1, 3, 5 are 5, 9, 5, 2 -> 9 (row 1), 5 (4), 5 (3), 2 (5);
    # the tie between rows 4 and 3 keeps their given order
    assert by_length(torch.tensor([4, 1, 3, 5]), lengths).tolist() == [1, 4, 3, 5]
    # groups of 2 (rows 0-1, 2-3, 4-5) keyed by their longest: 9, 5, 5 -> unchanged order;
    # given as groups 2, 0: keys 5, 9 -> group 0 first, each group's rows kept together
    assert by_length(torch.tensor([4, 5, 0, 1]), lengths, 2).tolist() == [0, 1, 4, 5]
    assert by_length(torch.tensor([2, 3, 4, 5]), lengths, 2).tolist() == [2, 3, 4, 5]


def test_length_ordered_micro_batches_pad_less():
    # micro-batches of 2 rows, each trimmed to its longest completion:
    # given order (2, 9), (3, 8), (1, 7): 2*9 + 2*8 + 2*7 = 48 cells
    # longest first (9, 8), (7, 3), (2, 1): 2*9 + 2*7 + 2*2 = 36 cells
    lengths = torch.tensor([2, 9, 3, 8, 1, 7])
    s = settings(share_prompt=False, micro_batch_size=2)

    def cells(order):
        return sum(len(m) * int(lengths[m].max()) for m in s.micro_batches(order, None))

    rows = torch.arange(6)
    assert cells(rows) == 48
    assert cells(by_length(rows, lengths)) == 36


def test_old_logprobs_come_back_in_rollout_order(tiny_model, rollout):
    # the pass runs rows longest first; each row's log-probs are still its own
    s = settings(micro_batch_size=G)
    whole, _ = completion_logprobs(tiny_model, rollout, temperature=1.0)
    assert torch.allclose(batched_logprobs(tiny_model, rollout, s), whole, atol=1e-5)
