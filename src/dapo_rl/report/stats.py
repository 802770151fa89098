"""Means and 95% intervals over seeds, and paired differences between ablation rows.

Owns the one interval the project reports: the Student-t 95% confidence interval of a
mean, mean +- t(0.975, n-1) * s / sqrt(n), with s the Bessel-corrected (n-1) standard
deviation. A difference between two rows is paired: seed by seed (the rows share their
seeds, so the seed's own luck cancels), then the same interval over the differences.
Pure functions of plain floats, so the ablation that writes the numbers and the report
that draws them use the same arithmetic.
"""

from __future__ import annotations

import math
from statistics import NormalDist

# t(0.975, df) for df = 1..30 (four decimals, as printed in t tables); beyond 30 the
# Cornish-Fisher expansion below is within 1e-5 of the exact quantile.
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z, v = NormalDist().inv_cdf(0.975), float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


def mean_interval(values: list[float]) -> tuple[float, float, float] | None:
    """(mean, low, high) of the 95% t-interval over the finite ``values``.

    None without any finite value; with one value the interval is unknown: (x, nan, nan).
    """
    xs = [x for x in values if math.isfinite(x)]
    n = len(xs)
    if n == 0:
        return None
    mean = sum(xs) / n
    if n == 1:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_differences(before: dict, after: dict) -> list[float]:
    """``after[s] - before[s]`` for every seed ``s`` both have with finite values, in
    ``before``'s seed order."""
    return [
        after[s] - before[s]
        for s in before
        if s in after and math.isfinite(before[s]) and math.isfinite(after[s])
    ]


def excludes_zero(low: float, high: float) -> bool:
    """Whether an interval lies wholly on one side of zero (an unknown one does not)."""
    return math.isfinite(low) and math.isfinite(high) and (low > 0 or high < 0)
