"""benchmarks/bf16_learning.py: the time a run took to gain the target held-out points."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bf16_learning import time_to_gain  # noqa: E402


def test_time_to_gain_sums_step_times_up_to_the_first_eval_at_the_target():
    records = [
        {"step": 0, "eval/acc": 0.60},
        {"step": 1, "time/step": 10.0},
        {"step": 2, "time/step": 12.0, "eval/acc": 0.70},  # +10: not yet
        {"step": 3, "time/step": 11.0},
        {"step": 4, "time/step": 9.0, "eval/acc": 0.75},  # +15: here, 10 + 12 + 11 + 9 = 42
        {"step": 5, "time/step": 8.0, "eval/acc": 0.90},
    ]
    assert time_to_gain(records, 0.15) == (4, pytest.approx(42.0))
    assert time_to_gain(records, 0.05) == (2, pytest.approx(22.0))
    assert time_to_gain(records, 0.50) == (None, None)
    assert time_to_gain([{"step": 1, "time/step": 1.0}], 0.15) == (None, None)
