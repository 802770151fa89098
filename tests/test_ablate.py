"""The cumulative ablation: row definitions, and a tiny end-to-end run that resumes."""

from __future__ import annotations

import json
from pathlib import Path

from tiny_run import TINY_RUN

from dapo_rl.ablate import rows, run_ablation
from dapo_rl.config import build

HERE = Path(__file__).parent


def test_rows_add_one_switch_each_and_end_at_dapo():
    names = [n for n, _ in rows()]
    assert names == [
        "naive_grpo",
        "+overlong_filter",
        "+clip_higher",
        "+soft_overlong",
        "+token_loss",
        "+dynamic_sampling",
    ]
    cfgs = [build(overrides=r).algo for _, r in rows()]
    first, last = cfgs[0], cfgs[-1]
    assert (
        first.eps_high,
        first.loss_agg,
        first.dynamic_sampling,
        first.overlong_shaping,
        first.overlong_filter,
        first.kl_coef,
    ) == (0.2, "seq_mean_token_mean", False, False, False, 0)
    assert (
        last.eps_high,
        last.loss_agg,
        last.dynamic_sampling,
        last.overlong_shaping,
        last.overlong_filter,
    ) == (0.28, "token_mean", True, True, True)
    for a, b in zip(cfgs, cfgs[1:], strict=False):  # exactly one field changes per row
        diff = [k for k in a.__dataclass_fields__ if getattr(a, k) != getattr(b, k)]
        assert len(diff) == 1, diff


def test_tiny_ablation_runs_writes_tables_and_skips_finished_rows(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE / "train"))
    overrides = {**TINY_RUN, "train.steps": 1, "algo.max_gen_rounds": 2}
    results = run_ablation(tmp_path, overrides)
    assert len(results) == 6
    assert (tmp_path / "ablation.md").read_text().count("\n") == 8
    assert json.loads((tmp_path / "ablation.json").read_text())["rows"][0]["row"] == "naive_grpo"
    assert (tmp_path / "report.html").exists()
    before = (tmp_path / "0_naive_grpo" / "metrics.jsonl").read_text()
    again = run_ablation(tmp_path, overrides)  # every row finished: nothing re-runs
    assert (tmp_path / "0_naive_grpo" / "metrics.jsonl").read_text() == before
    assert [r["eval_acc_end"] for r in again] == [r["eval_acc_end"] for r in results]
