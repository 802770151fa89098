"""Held-out evaluation: greedy accuracy, avg@k, unbiased pass@k."""

from dapo_rl.eval.core import evaluate, pass_at_k

__all__ = ["evaluate", "pass_at_k"]
