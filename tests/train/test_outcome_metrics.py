"""The per-step metrics each DAPO fix acts on, computed by hand on two groups of two."""

from __future__ import annotations

import pytest
import torch

from dapo_rl.train.step import outcome_metrics


def test_lengths_by_outcome_truncated_reward_and_zero_variance_tokens():
    # group 0: right (4 tokens), wrong and truncated (6 tokens, reward -1.5): informative
    # group 1: right (2), right (8): all correct, zero variance -> its 10 of 20 tokens
    out = outcome_metrics(
        reward=torch.tensor([1.0, -1.5, 1.0, 1.0]),
        acc=torch.tensor([1.0, 0.0, 1.0, 1.0]),
        lens=torch.tensor([4.0, 6.0, 2.0, 8.0]),
        trunc=torch.tensor([0.0, 1.0, 0.0, 0.0]),
        group_size=2,
    )
    assert out["ds/zero_var_token_frac"] == pytest.approx(10 / 20)
    assert out["len/correct_mean"] == pytest.approx((4 + 2 + 8) / 3)
    assert out["len/wrong_mean"] == pytest.approx(6.0)
    assert out["reward/truncated_mean"] == pytest.approx(-1.5)


def test_means_over_empty_sets_are_left_out_not_nan():
    out = outcome_metrics(
        reward=torch.ones(4),
        acc=torch.ones(4),
        lens=torch.tensor([3.0, 5.0, 1.0, 1.0]),
        trunc=torch.zeros(4),
        group_size=2,
    )
    assert set(out) == {"ds/zero_var_token_frac", "len/correct_mean"}
    assert out["ds/zero_var_token_frac"] == 1.0
