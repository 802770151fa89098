"""pass@k: the unbiased estimator 1 - C(n - c, k) / C(n, k) (Chen et al. 2021)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dapo_rl.eval.core import pass_at_k


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 1, 0.4),  # 1 - C(3,1)/C(5,1) = 1 - 3/5 = 2/5
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
        (5, 2, 4, 1.0),  # n - c = 3 < 4: every draw of 4 holds a correct one
        (5, 0, 3, 0.0),  # no correct samples
        (5, 5, 1, 1.0),  # all correct
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (10, 1, 5, 0.5),  # 1 - C(9,5)/C(10,5) = 1 - 126/252
        (8, 3, 2, 1 - 10 / 28),  # 1 - C(5,2)/C(8,2) = 18/28
    ],
)
def test_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "n, c, k",
    [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6), (0, 0, 1), (3, 1, -1)],
)
def test_invalid_arguments(n, c, k):
    with pytest.raises(ValueError, match=f"n={n} c={c} k={k}"):
        pass_at_k(n, c, k)


@st.composite
def n_and_c(draw):
    n = draw(st.integers(1, 60))
    return n, draw(st.integers(0, n))


@given(n_and_c())
def test_pass_at_1_is_the_fraction_correct(nc):
    n, c = nc
    assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)


@given(n_and_c())
def test_monotone_in_k_and_bounded(nc):
    n, c = nc
    values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a <= b + 1e-12 for a, b in zip(values, values[1:], strict=False))
    assert values[-1] == (1.0 if c > 0 else 0.0)  # k = n draws every sample


@given(n_and_c(), st.integers(1, 60))
def test_matches_the_product_form(nc, k):
    # C(n-c, k)/C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i), the numerically stable form
    n, c = nc
    k = min(k, n)
    expected = 1.0 if n - c < k else 1.0 - math.prod(1 - k / i for i in range(n - c + 1, n + 1))
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-9)
