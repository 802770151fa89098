"""Edge cases of the update (issue 12): which old log-probs, dropout, empty mini-batches.

The ratio tests record what the update hands to ``clipped_surrogate`` on its first
mini-batch: with old log-probs from the update's own forward at unchanged weights, the
ratio must be exactly 1 (bit for bit, not to a tolerance).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from tiny_run import tiny_cfg
from tiny_update import make_rollout, settings

from dapo_rl.train import update
from dapo_rl.train.update import batched_logprobs, policy_update

HERE = Path(__file__).parent


@pytest.fixture()
def rollout(tiny_model, tokenizer):
    return make_rollout(tiny_model, tokenizer)


def _record_first_surrogate(monkeypatch) -> list:
    """Capture (logp, old_logp) of every ``clipped_surrogate`` call in the update."""
    calls = []
    real = update.clipped_surrogate

    def spy(logp, old_logp, adv, **kw):
        calls.append((logp.detach().clone(), old_logp.detach().clone()))
        return real(logp, old_logp, adv, **kw)

    monkeypatch.setattr(update, "clipped_surrogate", spy)
    return calls


def _update(model, rollout, s, *, loss_mask=None, old=None, opt=None):
    opt = opt or torch.optim.SGD(model.parameters(), lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return policy_update(
        model,
        opt,
        sched,
        rollout,
        adv=torch.linspace(-1, 1, len(rollout)),
        old_logp=batched_logprobs(model, rollout, s) if old is None else old,
        loss_mask=rollout.mask if loss_mask is None else loss_mask,
        ref_logp=None,
        s=s,
        generator=torch.Generator().manual_seed(0),
    )


def test_dropout_is_off_in_the_update_forward(tiny_model, rollout, monkeypatch):
    # attention dropout 0.5: in training mode every forward draws a new mask, so the update's
    # log-probs would differ from the (eval-mode) old log-probs at the same weights
    model = copy.deepcopy(tiny_model)
    for m in model.modules():
        if hasattr(m, "attention_dropout"):
            m.attention_dropout = 0.5
    model.train()
    s = settings()
    calls = _record_first_surrogate(monkeypatch)
    _update(model, rollout, s)
    _update(model, rollout, s)  # lr 0: the same weights, the same shuffle, a second forward
    (logp1, old), (logp2, _) = calls
    assert torch.equal(logp1, old)  # ratio exactly 1 against the eval-mode old log-probs
    assert torch.equal(logp1, logp2)
    assert model.training  # the caller's mode is restored


def test_ratio_is_exactly_one_on_the_first_minibatch_with_recomputed_old_logprobs(
    tiny_model, rollout, monkeypatch
):
    s = settings()
    calls = _record_first_surrogate(monkeypatch)
    _update(copy.deepcopy(tiny_model), rollout, s)
    ((logp, old),) = calls
    assert torch.equal(logp, old)


def test_bfloat16_recomputes_old_logprobs_so_the_first_ratio_is_exactly_one(tmp_path, monkeypatch):
    # the sampler's bf16 log-probs (one token at a time, from a KV cache) differ from the
    # update's whole-sequence forward; bf16 must use the update's own forward as old_logp
    from dapo_rl.train.loop import build_state
    from dapo_rl.train.step import train_step

    monkeypatch.syspath_prepend(str(HERE))  # toy_rewards
    cfg = tiny_cfg(
        tmp_path,
        **{
            "model.dtype": "bfloat16",
            "algo.dynamic_sampling": False,  # a random model's groups may all be wrong
            "train.mini_batches_per_step": 1,
            "train.micro_batch_size": 8,
        },
    )
    assert not cfg.train.recompute_old_logprobs  # not asked for: implied by bfloat16
    state = build_state(cfg)
    assert state.update_settings.recompute_old
    calls = _record_first_surrogate(monkeypatch)
    sampled = []
    real_generate = state.engine.generate
    state.engine.generate = lambda *a, **k: sampled.append(real_generate(*a, **k)) or sampled[-1]
    train_step(state)
    (logp, old), batch = calls[0], sampled[0]
    assert torch.equal(logp, old)  # ratio exactly 1: old_logp is the update's own forward
    # the sampler's own values (same rows, in another order) are not those
    assert not torch.equal(batch.logp.flatten().sort().values, old.cpu().flatten().sort().values)


def test_a_minibatch_without_loss_tokens_takes_no_adamw_step(tiny_model, rollout):
    # AdamW at zero gradient still moves weights: momentum from the last step, and weight
    # decay. A mini-batch with no loss token (every row filtered) must leave them as they are
    model = copy.deepcopy(tiny_model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    s = settings()
    _update(model, rollout, s, opt=opt)  # a real step: AdamW now holds momentum
    before = [p.detach().clone() for p in model.parameters()]
    out = _update(model, rollout, s, opt=opt, loss_mask=torch.zeros_like(rollout.mask))
    assert out["grad/empty_minibatches"] == 1 and out["grad/skipped_steps"] == 0
    for a, p in zip(before, model.parameters(), strict=True):
        assert torch.equal(a, p)
    steps = {int(st["step"]) for st in opt.state.values()}
    assert steps == {1}  # the empty mini-batch never reached the optimizer
