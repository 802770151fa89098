"""Rollout engines behind one small interface: prompts in, a ``Rollout`` out."""

from dapo_rl.rollout.engine import HFEngine, Rollout, concat_rollouts, sample_tokens

__all__ = ["HFEngine", "Rollout", "concat_rollouts", "sample_tokens"]
