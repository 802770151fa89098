"""Learning-rate schedules, counted in optimizer steps.

``lr_factor`` is the multiplier of ``train.lr`` for the optimizer step about to be taken:
a linear warm-up over ``train.warmup_steps`` steps (step s gets (s + 1) / (warmup + 1)),
then ``constant``, ``linear`` or ``cosine`` decay to ``train.min_lr_ratio`` at the horizon.

The horizon is ``train.steps * train.mini_batches_per_step``: a training step takes that
many optimizer steps whatever dynamic sampling did to find its groups, so the schedule ends
with the run. A step that took fewer (fewer groups than mini-batches, no informative group,
a skipped non-finite step) would push the schedule past the end of the run; ``seek`` puts
the scheduler back on the plan after every training step. (Sizing the horizon from the data
instead - batches in the data loader, as verl's trainer does - is off under dynamic
sampling, where one training step reads a varying number of batches.)
"""

from __future__ import annotations

import math
from functools import partial

import torch

SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(step: int, *, kind: str, warmup: int, horizon: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, horizon - warmup))
    match kind:
        case "linear":
            decay = 1.0 - progress
        case "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        case _:
            raise ValueError(f"unknown schedule {kind!r}: use one of {', '.join(SCHEDULES)}")
    return min_ratio + (1.0 - min_ratio) * decay


def make_scheduler(optimizer, cfg) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's scheduler: ``lr_factor`` of the optimizer steps taken so far."""
    t = cfg.train
    fn = partial(
        lr_factor,
        kind=t.lr_schedule,
        warmup=t.warmup_steps,
        horizon=t.steps * t.mini_batches_per_step,
        min_ratio=t.min_lr_ratio,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def seek(scheduler: torch.optim.lr_scheduler.LambdaLR, taken: int) -> None:
    """Set ``scheduler`` as if ``taken`` optimizer steps had been taken."""
    scheduler.last_epoch = taken
    lrs = [
        base * fn(taken) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
    ]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() reports
