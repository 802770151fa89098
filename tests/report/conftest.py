"""The report tests' shared fixture: two synthetic runs with configs that differ."""

from pathlib import Path

import pytest
from report_runs import write_run


@pytest.fixture
def two_runs(tmp_path) -> list[Path]:
    a = write_run(tmp_path / "dapo_run", 20, 0.02, alert_at=(7, 8, 9))
    b = write_run(tmp_path / "grpo_run", 15, 0.01, drop=("clip/low_frac", "entropy/mean"))
    (a / "config.yaml").write_text("preset: dapo\nalgo:\n  eps_high: 0.28\n  eps_low: 0.2\n")
    (b / "config.yaml").write_text("preset: grpo\nalgo:\n  eps_high: 0.2\n  eps_low: 0.2\n")
    return [a, b]
