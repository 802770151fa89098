"""Mean, 95% t interval and paired differences, computed by hand."""

from __future__ import annotations

import math

import pytest

from dapo_rl.stats import mean_interval, paired_difference, t975


def test_interval_of_three_values():
    # mean 2, Bessel sd 1, half width t(0.975, 2) * 1 / sqrt(3) = 4.303 / 1.7321 = 2.4843
    m = mean_interval([1.0, 2.0, 3.0])
    assert m["mean"] == 2.0 and m["n"] == 3
    assert m["ci95"] == pytest.approx([2 - 2.4843, 2 + 2.4843], abs=1e-4)


def test_one_value_has_no_interval_and_non_finite_values_are_dropped():
    assert mean_interval([0.5, math.nan, None]) == {"mean": 0.5, "ci95": None, "n": 1}
    assert mean_interval([]) == {"mean": None, "ci95": None, "n": 0}


def test_paired_difference_excludes_zero_only_when_the_interval_does():
    # diffs 2, 3, 1: mean 2, sd 1, interval [-0.484, 4.484] spans zero
    wide = paired_difference([3.0, 5.0, 4.0], [1.0, 2.0, 3.0])
    assert wide["mean"] == 2.0 and not wide["excludes_zero"]
    assert wide["ci95"][0] == pytest.approx(-0.4843, abs=1e-4)
    # diffs 1.1, 1.2, 1.0: mean 1.1, sd 0.1, half width 4.303 * 0.1 / 1.7321 = 0.2484
    tight = paired_difference([2.1, 2.2, 2.0], [1.0, 1.0, 1.0])
    assert tight["excludes_zero"]
    assert tight["ci95"] == pytest.approx([1.1 - 0.2484, 1.1 + 0.2484], abs=1e-4)
    # the same sign below zero excludes zero too
    assert paired_difference([1.0, 1.0, 1.0], [2.1, 2.2, 2.0])["excludes_zero"]


def test_pairs_with_a_missing_side_are_left_out_and_lengths_must_match():
    d = paired_difference([1.0, None, 3.0], [0.0, 5.0, 1.0])
    assert d["n"] == 2 and d["mean"] == 1.5
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])


def test_t_quantiles():
    assert t975(1) == 12.706 and t975(30) == 2.042 and t975(1000) == 1.96
    with pytest.raises(ValueError):
        t975(0)
