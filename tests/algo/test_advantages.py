import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dapo_rl.algo import group_advantages

EPS = 1e-6


def test_two_groups_of_two_hand_computed():
    # rewards [1, -1 | -1, 1], G=2. Each group: mean 0, Bessel std sqrt((1 + 1) / 1) = sqrt(2)
    # -> adv = [1, -1, -1, 1] / (sqrt(2) + 1e-6)
    adv = group_advantages(torch.tensor([1.0, -1.0, -1.0, 1.0]), 2)
    s = math.sqrt(2) + EPS
    assert torch.allclose(adv, torch.tensor([1 / s, -1 / s, -1 / s, 1 / s]))


def test_one_group_of_four_hand_computed():
    # rewards [0, 1, 1, 1]: mean 0.75, deviations [-0.75, 0.25, 0.25, 0.25]
    # Bessel var = (0.5625 + 3 * 0.0625) / 3 = 0.25, std 0.5 -> adv [-1.5, 0.5, 0.5, 0.5]
    adv = group_advantages(torch.tensor([0.0, 1.0, 1.0, 1.0]), 4)
    expected = torch.tensor([-0.75, 0.25, 0.25, 0.25]) / (0.5 + EPS)
    assert torch.allclose(adv, expected)
    assert torch.allclose(adv, torch.tensor([-1.5, 0.5, 0.5, 0.5]), atol=1e-5)


def test_unscaled_is_centered_only():
    # Dr. GRPO: r - mean; [0, 1, 1, 1] -> [-0.75, 0.25, 0.25, 0.25]; [2, 4] -> [-1, 1]
    adv = group_advantages(torch.tensor([0.0, 1.0, 1.0, 1.0, 2.0, 4.0, 3.0, 3.0]), 4, scale=False)
    assert torch.allclose(adv, torch.tensor([-0.75, 0.25, 0.25, 0.25, -1.0, 1.0, 0.0, 0.0]))


def test_unscaled_allows_group_size_one():
    assert torch.equal(group_advantages(torch.tensor([3.0, -1.0]), 1, scale=False), torch.zeros(2))


def test_eps_is_added_to_std():
    # [0, 2]: mean 1, std sqrt(2); with eps=1: adv = [-1, 1] / (sqrt(2) + 1)
    adv = group_advantages(torch.tensor([0.0, 2.0]), 2, eps=1.0)
    assert torch.allclose(adv, torch.tensor([-1.0, 1.0]) / (math.sqrt(2) + 1.0))


def test_integer_and_bool_rewards_become_float():
    adv = group_advantages(torch.tensor([1, 0, 0, 0]), 4)
    assert adv.is_floating_point()
    # [1, 0, 0, 0]: mean 0.25, Bessel var = (0.5625 + 3 * 0.0625) / 3 = 0.25 -> [1.5, -0.5 x3]
    assert torch.allclose(adv, torch.tensor([1.5, -0.5, -0.5, -0.5]), atol=1e-5)


def test_grad_flows_through_rewards():
    r = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    group_advantages(r, 3, scale=False)[0].backward()
    # d(r0 - mean)/dr = [1 - 1/3, -1/3, -1/3]
    assert torch.allclose(r.grad, torch.tensor([2 / 3, -1 / 3, -1 / 3]))


@pytest.mark.parametrize(
    ("rewards", "group_size", "scale"),
    [
        (torch.zeros(5), 2, True),  # not divisible
        (torch.zeros(4), 1, True),  # std undefined for G=1
        (torch.zeros(4), 0, False),
        (torch.zeros(2, 2), 2, True),  # not 1-D
    ],
)
def test_invalid_inputs_raise(rewards, group_size, scale):
    with pytest.raises(ValueError):
        group_advantages(rewards, group_size, scale=scale)


groups = st.integers(1, 5).flatmap(
    lambda n: st.integers(2, 6).flatmap(
        lambda g: st.tuples(
            st.just(g),
            st.lists(
                st.floats(-100, 100, allow_nan=False, width=32), min_size=n * g, max_size=n * g
            ),
        )
    )
)


@settings(max_examples=60, deadline=None)
@given(groups, st.booleans())
def test_advantages_sum_to_zero_per_group(gr, scale):
    g, values = gr
    adv = group_advantages(torch.tensor(values, dtype=torch.float64), g, scale=scale)
    sums = adv.reshape(-1, g).sum(dim=1)
    assert torch.allclose(sums, torch.zeros_like(sums), atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(groups, st.floats(-100, 100, allow_nan=False, width=32), st.booleans())
def test_zero_variance_groups_give_exactly_zero(gr, constant, scale):
    g, values = gr
    r = torch.tensor(values).reshape(-1, g)
    r[0] = constant  # first group constant, whatever its value
    adv = group_advantages(r.reshape(-1), g, scale=scale).reshape(-1, g)
    assert torch.equal(adv[0], torch.zeros(g))


@settings(max_examples=60, deadline=None)
@given(groups)
def test_scaled_advantages_have_unit_std(gr):
    g, values = gr
    r = torch.tensor(values, dtype=torch.float64).reshape(-1, g)
    spread = r.std(dim=1, correction=1) > 1e-3
    adv = group_advantages(r.reshape(-1), g, eps=0.0).reshape(-1, g)
    std = adv.std(dim=1, correction=1)
    assert torch.allclose(std[spread], torch.ones_like(std[spread]), atol=1e-6)
