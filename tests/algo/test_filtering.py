import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dapo_rl.algo import group_advantages, keep_groups


def test_hand_computed_pairs():
    # groups [1, 1] all right, [0, 1] mixed, [0, 0] all wrong -> keep only the middle one
    keep = keep_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0]), 2)
    assert keep.dtype == torch.bool
    assert keep.tolist() == [False, True, False]


def test_bool_accuracies_group_of_three():
    # [T, T, T] dropped, [F, F, T] kept
    acc = torch.tensor([True, True, True, False, False, True])
    assert keep_groups(acc, 3).tolist() == [False, True]


def test_partial_credit_hand_computed_with_each_metric():
    # a partial-credit verifier: scores 0.5, 1.0 | 0.2, 0.2 | -1, 1.0; acc = score > 0
    score = torch.tensor([0.5, 1.0, 0.2, 0.2, -1.0, 1.0])
    acc = score > 0  # [T, T | T, T | F, T]
    # acc: the first two groups look all correct and are dropped, only the last is kept
    assert keep_groups(acc, 2).tolist() == [False, False, True]
    # score: 0.5 != 1.0 kept, 0.2 == 0.2 dropped, -1 != 1 kept
    assert keep_groups(score, 2).tolist() == [True, False, True]


def test_group_size_one_drops_everything():
    assert keep_groups(torch.tensor([0.0, 1.0]), 1).tolist() == [False, False]


@pytest.mark.parametrize(("acc", "g"), [(torch.zeros(5), 2), (torch.zeros(4), 0)])
def test_invalid_inputs_raise(acc, g):
    with pytest.raises(ValueError):
        keep_groups(acc, g)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(2, 6), st.data())
def test_kept_groups_are_exactly_those_with_nonzero_advantage(n, g, data):
    # dynamic sampling drops exactly the groups whose advantage is identically zero
    bits = data.draw(st.lists(st.booleans(), min_size=n * g, max_size=n * g))
    acc = torch.tensor(bits)
    adv = group_advantages(acc.float(), g).reshape(n, g)
    assert torch.equal(keep_groups(acc, g), (adv != 0).any(dim=1))
