"""The tiny-model run settings shared by the loop, checkpoint, reliability and eval tests.

The verifier ``toy_rewards:length_parity`` lives in tests/train; tests that use these
settings put that folder on ``sys.path``.
"""

from __future__ import annotations

from dapo_rl.config import build

TINY_RUN = {
    "model.name": "tiny-random",
    "run.progress": False,
    "rewards.fn": "toy_rewards:length_parity",
    "rollout.group_size": 4,
    "rollout.prompts_per_step": 2,
    "rollout.max_new_tokens": 8,
    "algo.overlong_buffer": 4,
    "eval.size": 4,
    "train.micro_batch_size": 4,
    "train.steps": 2,
    "train.lr": 1e-3,
}


def tiny_cfg(run_dir, **overrides):
    """A validated tiny-model Config writing to ``run_dir``."""
    return build(overrides={**TINY_RUN, "run.dir": str(run_dir), **overrides})


def comparable(records: list[dict]) -> list[dict]:
    """Metric records without what differs between identical runs: timings, rates, memory."""
    volatile = ("time/", "throughput/", "mem/")
    return [{k: v for k, v in r.items() if not k.startswith(volatile)} for r in records]
