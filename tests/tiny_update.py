"""The update tests' shared batch: three prompts, four completions each, from the tiny model,
and UpdateSettings with the dapo defaults, one optimizer step and no gradient clipping."""

from __future__ import annotations

import torch

from dapo_rl.config import build
from dapo_rl.rollout import HFEngine
from dapo_rl.train.update import UpdateSettings

G = 4
PROMPTS = ["What is 2 + 3?", "Sum 11 and 12 and tell me, please.", "7 + 1?"]


def make_rollout(model, tokenizer):
    """G completions of up to 10 tokens per prompt, seeded."""
    engine = HFEngine(model, tokenizer)
    return engine.generate(
        PROMPTS, n=G, max_new_tokens=10, generator=torch.Generator().manual_seed(3)
    )


def settings(**kw) -> UpdateSettings:
    # the dapo defaults (clip 0.2 / 0.28, token mean, no KL), one optimizer step, no grad clip
    base = dict(norm_len=10, mini_batches=1, micro_batch_size=12, max_grad_norm=1e9, group_size=G)
    return UpdateSettings.from_config(build(), **{**base, **kw})
