"""Small-sample statistics for seeded experiments: a mean with its 95% interval, and paired
differences.

Choices:
- The interval is Student's t interval, mean +- t(0.975, n-1) * s / sqrt(n), with the
  Bessel-corrected standard deviation s: with 3 to 10 seeds the normal 1.96 would be far
  too narrow (t(0.975, 2) = 4.30).
- Rows of an ablation share seeds, so two rows are compared seed by seed (the paired
  difference), which removes the variation that the seed causes in both.
- One value gives a mean but no interval (None): a single seed says nothing about noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Two-sided 95% quantiles t(0.975, df) of Student's t distribution, df = 1..30.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(df: int) -> float:
    """t(0.975, df); beyond df = 30 the normal quantile 1.96 is within 4% of it."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_interval(values: Sequence[float]) -> dict:
    """``{"mean", "ci95": [lo, hi] or None, "n"}`` of ``values`` (non-finite ones dropped)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    mean = sum(xs) / n
    if n == 1:
        return {"mean": mean, "ci95": None, "n": 1}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}


def paired_difference(after: Sequence[float], before: Sequence[float]) -> dict:
    """``mean_interval`` of ``after[i] - before[i]`` plus ``excludes_zero``.

    Pairs where either side is missing or non-finite are left out.
    """
    if len(after) != len(before):
        raise ValueError(f"paired samples differ in length: {len(after)} vs {len(before)}")
    diffs = [
        float(a) - float(b)
        for a, b in zip(after, before, strict=True)
        if a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b))
    ]
    out = mean_interval(diffs)
    ci = out["ci95"]
    out["excludes_zero"] = ci is not None and (ci[0] > 0 or ci[1] < 0)
    return out
