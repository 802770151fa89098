"""The verdict a verifier returns, and the one rule that turns a user's result into one.

Choices:
- Built-in verifiers score +1 (correct) / -1 (wrong); ``acc`` is the raw correctness that
  dynamic sampling filters on, kept apart from the score so shaping never changes it.
- A user verifier may return a ``Verdict``, a number (acc = score > 0), a bool (+1 / -1, like
  the built-ins) or a ``(score, acc)`` pair; ``as_verdict`` is the only place that decides this.
- A failed call (raised, timed out, non-finite score) becomes ``failure(status)``: wrong, -1.
- "Finite" means finite in the trainer's arithmetic, not in Python's: rewards become a float32
  tensor and a group's mean sums them, so a score beyond ``SCORE_LIMIT`` (float32's largest
  value / 2^20: a group of up to 2^20 such scores still sums) is "nonfinite". 1e39 is a
  finite Python float and inf in float32; it made every update NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STATUSES = ("ok", "timeout", "error", "nonfinite")
FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max
SCORE_LIMIT = FLOAT32_MAX / 2**20  # about 3.2e32
FAILURES = STATUSES[1:]


@dataclass(frozen=True)
class Verdict:
    """One verifier call's result."""

    score: float  # reward from the verifier (+1 correct / -1 wrong for built-ins)
    acc: bool  # raw correctness, what dynamic sampling filters on
    status: str = "ok"  # "ok" | "timeout" | "error" | "nonfinite"


def graded(correct: bool) -> Verdict:
    """The built-in reward: +1.0 when correct, -1.0 otherwise."""
    return Verdict(1.0 if correct else -1.0, bool(correct))


def failure(status: str) -> Verdict:
    """A call that produced no usable answer counts as wrong."""
    return Verdict(-1.0, False, status)


def as_verdict(result: object) -> Verdict:
    """Normalise what a verifier returned: Verdict, number, bool, or (score, acc)."""
    if isinstance(result, Verdict):
        return result
    if hasattr(result, "item") and not isinstance(result, tuple):
        result = result.item()  # numpy scalar or 0-d tensor
    if isinstance(result, bool):
        return graded(result)
    if isinstance(result, tuple) and len(result) == 2:
        score, acc = result
        return Verdict(float(score), bool(acc))
    if isinstance(result, (int, float)):
        return Verdict(float(result), float(result) > 0)
    raise TypeError(
        f"a verifier must return a Verdict, a number, a bool or (score, acc); "
        f"got {type(result).__name__}"
    )


def checked(verdict: Verdict) -> Verdict:
    """``verdict`` with plain types, or the 'nonfinite' failure when its score is NaN, inf or
    beyond ``SCORE_LIMIT`` (too large for the trainer's float32 sums)."""
    score = float(verdict.score)
    if not (math.isfinite(score) and abs(score) <= SCORE_LIMIT):
        return failure("nonfinite")
    return Verdict(score, bool(verdict.acc), verdict.status)
