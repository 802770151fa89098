"""Intervals over seeds and paired differences, against hand-computed numbers."""

import math

import pytest

from dapo_rl.report.stats import excludes_zero, mean_interval, paired_differences, t975


def test_t_quantiles():
    assert t975(1) == 12.7062 and t975(2) == 4.3027 and t975(30) == 2.0423
    # beyond the table: exact values 2.039513 (df 31) and 1.983972 (df 100)
    assert t975(31) == pytest.approx(2.039513, abs=1e-5)
    assert t975(100) == pytest.approx(1.983972, abs=1e-5)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t975(0)


def test_mean_interval_hand_computed():
    # mean 0.12; deviations -0.02, 0, 0.02 -> s = sqrt(0.0008 / 2) = 0.02;
    # half width = t(0.975, 2) * s / sqrt(3) = 4.3027 * 0.02 / 1.7320508 = 0.0496833
    mean, lo, hi = mean_interval([0.10, 0.12, 0.14])
    assert mean == pytest.approx(0.12)
    assert lo == pytest.approx(0.12 - 0.0496833, abs=1e-6)
    assert hi == pytest.approx(0.12 + 0.0496833, abs=1e-6)
    # non-finite values are left out; one value has no interval; none has no mean
    assert mean_interval([0.10, math.nan, 0.12, 0.14]) == (mean, lo, hi)
    one = mean_interval([0.5, math.inf])
    assert one[0] == 0.5 and math.isnan(one[1]) and math.isnan(one[2])
    assert mean_interval([]) is None and mean_interval([math.nan]) is None


def test_paired_differences_match_seeds():
    before = {"0": 0.10, "1": 0.12, "2": 0.14, "3": 0.5}
    after = {"2": 0.21, "0": 0.15, "1": 0.18, "4": 0.9}
    assert paired_differences(before, after) == pytest.approx([0.05, 0.06, 0.07])
    assert paired_differences({"0": math.nan}, {"0": 1.0}) == []


def test_excludes_zero():
    assert excludes_zero(0.01, 0.2) and excludes_zero(-0.3, -0.01)
    assert not excludes_zero(-0.01, 0.2) and not excludes_zero(0.0, 0.2)
    assert not excludes_zero(math.nan, math.nan)
