import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dapo_rl.algo import overlong_penalty, truncation_mask


def test_overlong_penalty_hand_computed():
    # max_new_tokens=10, buffer=4 -> free up to 6 tokens, then (6 - L) / 4:
    # L=0 -> 0, 6 -> 0, 7 -> -0.25, 8 -> -0.5, 10 -> -1, 12 -> clamped at -1
    lengths = torch.tensor([0, 6, 7, 8, 10, 12])
    out = overlong_penalty(lengths, max_new_tokens=10, buffer=4)
    assert out.is_floating_point()
    assert torch.allclose(out, torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0, -1.0]))


def test_overlong_penalty_scales_with_penalty():
    # same lengths, penalty 0.5: 8 -> -0.25, 10 -> -0.5
    out = overlong_penalty(torch.tensor([8, 10]), max_new_tokens=10, buffer=4, penalty=0.5)
    assert torch.allclose(out, torch.tensor([-0.25, -0.5]))


def test_overlong_penalty_keeps_shape():
    out = overlong_penalty(torch.full((2, 3), 9), max_new_tokens=10, buffer=2)
    # (8 - 9) / 2 = -0.5 everywhere
    assert out.shape == (2, 3)
    assert torch.allclose(out, torch.full((2, 3), -0.5))


@pytest.mark.parametrize(
    ("max_new_tokens", "buffer", "penalty"),
    [(10, 0, 1.0), (10, 10, 1.0), (10, -1, 1.0), (10, 4, -1.0)],
)
def test_overlong_penalty_invalid(max_new_tokens, buffer, penalty):
    with pytest.raises(ValueError):
        overlong_penalty(
            torch.tensor([1]), max_new_tokens=max_new_tokens, buffer=buffer, penalty=penalty
        )


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 64), st.data(), st.floats(0, 5))
def test_overlong_penalty_bounded_and_monotone(max_new, data, penalty):
    buffer = data.draw(st.integers(1, max_new - 1))
    lengths = torch.arange(0, max_new + 5)
    out = overlong_penalty(lengths, max_new_tokens=max_new, buffer=buffer, penalty=penalty)
    assert (out <= 0).all() and (out >= -penalty - 1e-6).all()
    assert (out[1:] <= out[:-1] + 1e-6).all()
    assert (out[: max_new - buffer + 1] == 0).all()
    assert torch.isclose(out[max_new], torch.tensor(-penalty), atol=1e-6)


def test_truncation_mask_zeroes_truncated_rows():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    out = truncation_mask(mask, torch.tensor([False, True, False]))
    assert torch.equal(out, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert torch.equal(mask[1], torch.ones(3))  # input untouched


def test_truncation_mask_keeps_bool_dtype():
    mask = torch.ones(2, 2, dtype=torch.bool)
    out = truncation_mask(mask, torch.tensor([True, False]))
    assert out.dtype == torch.bool
    assert out.tolist() == [[False, False], [True, True]]


@pytest.mark.parametrize(
    "truncated", [torch.tensor([1, 0]), torch.tensor([True, False, True]), torch.tensor([[True]])]
)
def test_truncation_mask_invalid(truncated):
    with pytest.raises(ValueError):
        truncation_mask(torch.ones(2, 3), truncated)
