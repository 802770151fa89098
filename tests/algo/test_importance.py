"""Truncated importance sampling and the sampler/trainer mismatch measures."""

import math

import pytest
import torch

from dapo_rl.algo import sampler_mismatch, truncated_is_weight


def test_weight_is_the_capped_probability_ratio_hand_computed():
    # pi_train = 0.5, 0.2, 0.9 and pi_sampler = 0.25, 0.4, 0.1: ratios 2, 0.5, 9;
    # with C = 3 the weights are 2, 0.5, min(9, 3) = 3
    train = torch.tensor([[0.5, 0.2, 0.9]]).log().requires_grad_()
    sampler = torch.tensor([[0.25, 0.4, 0.1]]).log()
    w = truncated_is_weight(train, sampler, cap=3.0)
    assert torch.allclose(w, torch.tensor([[2.0, 0.5, 3.0]]))
    assert not w.requires_grad  # a constant in the loss


def test_mismatch_kl_and_out_of_range_hand_computed():
    # k3 = r - log r - 1: r = 2 -> 2 - 0.693147 - 1 = 0.306853; r = 0.5 -> 0.193147;
    # r = 9 -> 9 - 2.197225 - 1 = 5.802775. Outside [1/3, 3]: only r = 9
    train = torch.tensor([[0.5, 0.2, 0.9]]).log()
    sampler = torch.tensor([[0.25, 0.4, 0.1]]).log()
    out = sampler_mismatch(train, sampler, cap=3.0)
    expected = [2 - math.log(2) - 1, 0.5 - math.log(0.5) - 1, 9 - math.log(9) - 1]
    assert torch.allclose(out["kl"], torch.tensor([expected]), atol=1e-5)
    assert out["out_of_range"].tolist() == [[False, False, True]]
    assert "out_of_range" not in sampler_mismatch(train, sampler)


def test_agreeing_policies_give_weight_one_and_zero_mismatch():
    logp = torch.randn(4, 6, generator=torch.Generator().manual_seed(0)).clamp(max=0)
    assert torch.equal(truncated_is_weight(logp, logp, cap=2.0), torch.ones(4, 6))
    out = sampler_mismatch(logp, logp, cap=2.0)
    assert torch.equal(out["kl"], torch.zeros(4, 6)) and not out["out_of_range"].any()


def test_weight_never_exceeds_the_cap_even_for_huge_ratios():
    train, sampler = torch.tensor([[0.0, -1.0]]), torch.tensor([[-200.0, -1.0]])
    assert truncated_is_weight(train, sampler, cap=5.0).tolist() == [[5.0, 1.0]]


def test_log_ratio_is_clamped_before_exp_hand_computed():
    # without a finite cap the weight is the ratio itself: a log-ratio of 100 gives e^100 = inf
    # in float32 unclamped, and e^20 = 4.85e8 clamped at 20; -100 gives e^-20
    train, sampler = torch.tensor([[100.0, -100.0]]), torch.zeros(1, 2)
    w = truncated_is_weight(train, sampler, cap=math.inf)
    assert torch.allclose(w, torch.tensor([[math.exp(20), math.exp(-20)]]))
    # the mismatch k3 is clamped like every k3 value: e^20 - 21 -> 10
    assert sampler_mismatch(train, sampler)["kl"].tolist() == [[10.0, 10.0]]


def test_bad_arguments_are_refused():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError):
        truncated_is_weight(x, x, cap=0.0)
    with pytest.raises(ValueError):
        truncated_is_weight(x, torch.zeros(2, 4), cap=2.0)
