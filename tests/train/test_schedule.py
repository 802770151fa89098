"""Learning-rate schedules: hand-computed factors, and the horizon kept under dynamic sampling."""

from __future__ import annotations

import math

import pytest
import torch

from dapo_rl.config import build
from dapo_rl.train.schedule import lr_factor, make_scheduler, seek


def _f(step, kind, warmup=2, horizon=10, min_ratio=0.0):
    return lr_factor(step, kind=kind, warmup=warmup, horizon=horizon, min_ratio=min_ratio)


def test_warmup_then_each_schedule_by_hand():
    # warm-up 2: steps 0, 1 get 1/3, 2/3 (the old constant-after-warm-up rule)
    for kind in ("constant", "linear", "cosine"):
        assert _f(0, kind) == pytest.approx(1 / 3) and _f(1, kind) == pytest.approx(2 / 3)
    assert [_f(s, "constant") for s in (2, 9, 50)] == [1.0, 1.0, 1.0]
    # linear over horizon 10 - warmup 2 = 8 steps: step 2 -> 1, step 6 -> 1 - 4/8, step 9 -> 1/8
    assert [_f(s, "linear") for s in (2, 6, 9, 10, 20)] == pytest.approx([1, 0.5, 0.125, 0, 0])
    # cosine: step 6 is half-way: 0.5 * (1 + cos(pi/2)) = 0.5; step 4: 0.5 * (1 + cos(pi/4))
    assert _f(6, "cosine") == pytest.approx(0.5)
    assert _f(4, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert _f(10, "cosine") == pytest.approx(0.0)
    # a floor: min_ratio 0.1 maps decay d to 0.1 + 0.9 d
    assert _f(6, "linear", min_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert _f(0, "linear", warmup=0) == 1.0  # no warm-up: full rate at once
    with pytest.raises(ValueError, match="unknown schedule"):
        _f(5, "step")


def test_horizon_is_training_steps_times_mini_batches_and_seek_keeps_the_plan(tmp_path):
    cfg = build(
        overrides={
            "train.steps": 5,
            "train.mini_batches_per_step": 2,
            "train.warmup_steps": 0,
            "train.lr": 1.0,
            "train.lr_schedule": "linear",
        }
    )
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=cfg.train.lr)
    sched = make_scheduler(opt, cfg)
    assert sched.get_last_lr() == [1.0]
    # training step 1 took only one of its two optimizer steps (one informative group)
    opt.step()
    sched.step()
    assert sched.get_last_lr() == pytest.approx([0.9])  # 1 - 1/10 of the horizon 5 * 2
    seek(sched, 1 * 2)  # the loop puts it back on the plan: two steps per training step
    assert sched.get_last_lr() == pytest.approx([0.8]) and opt.param_groups[0]["lr"] == 0.8
    sched.step()
    assert sched.get_last_lr() == pytest.approx([0.7])
    seek(sched, 5 * 2)  # the end of the run: decayed to zero, not beyond
    assert sched.get_last_lr() == pytest.approx([0.0])
    state = sched.state_dict()
    again = make_scheduler(torch.optim.SGD([param], lr=1.0), cfg)
    again.load_state_dict(state)  # a checkpoint restores the position
    assert again.last_epoch == 10
