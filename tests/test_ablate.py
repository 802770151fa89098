"""The seeded ablation: row definitions, per-run summaries, and a tiny end-to-end run that
resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_run import TINY_RUN

from dapo_rl.ablate import EXPERIMENTS, aggregate_rows, rows, run_ablation, summarize_run
from dapo_rl.config import build
from dapo_rl.errors import DapoError

HERE = Path(__file__).parent


def test_cumulative_rows_add_one_switch_each_and_end_at_dapo():
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


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e != "cumulative"])
def test_single_fix_experiments_vary_only_their_fix_and_end_at_the_dapo_preset(experiment):
    cfgs = [build(overrides=r) for _, r in rows(experiment)]
    assert cfgs[-1].algo == build().algo or experiment == "overlong"
    for a, b in zip(cfgs, cfgs[1:], strict=False):
        diff = [k for k in a.algo.__dataclass_fields__ if getattr(a.algo, k) != getattr(b.algo, k)]
        assert 1 <= len(diff) <= 2, diff
    with pytest.raises(DapoError):
        rows("nope")


def test_summary_reads_gain_last_quarter_entropy_and_skips_missing_keys():
    records = [{"step": 0, "eval/acc": 0.25}]
    records += [{"step": s, "entropy/mean": float(s), "len/correct_mean": 10.0} for s in (1, 2, 3)]
    records += [{"step": 4, "entropy/mean": 4.0, "eval/acc": 0.5}]
    out = summarize_run(records)
    assert out["eval_gain_pts"] == 25.0
    assert out["entropy_last_quarter"] == 4.0  # the last ceil(4/4) = 1 step
    assert out["len_correct"] == 10.0 and out["len_wrong"] is None


def test_rows_are_compared_seed_by_seed():
    a = [{"seed": s, "run_dir": "", "steps": 1, "x": v} for s, v in enumerate([1.0, 2.0, 3.0])]
    b = [{"seed": s, "run_dir": "", "steps": 1, "x": v} for s, v in enumerate([2.1, 3.2, 4.0])]
    out = aggregate_rows(["a", "b"], [a, b])
    assert out[0]["mean"]["x"] == 2.0 and "vs_previous" not in out[0]
    diff = out[1]["vs_previous"]["x"]  # 1.1, 1.2, 1.0: excludes zero (see test_stats)
    assert diff["mean"] == pytest.approx(1.1) and diff["excludes_zero"]


def test_tiny_seeded_ablation_writes_intervals_and_skips_finished_runs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE / "train"))
    overrides = {**TINY_RUN, "train.steps": 1, "algo.max_gen_rounds": 2}
    result = run_ablation(tmp_path, overrides, seeds=[0, 1], experiment="clip_higher")
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved["seeds"] == [0, 1] and [r["row"] for r in saved["rows"]] == [
        "eps_high_0.20",
        "eps_high_0.28",
    ]
    first, second = saved["rows"]
    assert [s["seed"] for s in first["seeds"]] == [0, 1]
    assert first["ci95"]["eval_acc_end"] is not None or first["mean"]["eval_acc_end"] is not None
    assert set(second["vs_previous"]) >= {"eval_gain_pts", "entropy_last_quarter"}
    assert first["curves"]["entropy/mean"]["step"] == [1]
    assert "interval excludes zero" in (tmp_path / "ablation.md").read_text()
    assert (tmp_path / "report.html").exists()
    run = tmp_path / "0_eps_high_0.20" / "seed1" / "metrics.jsonl"
    before = run.read_text()
    again = run_ablation(tmp_path, overrides, seeds=[0, 1], experiment="clip_higher")
    assert run.read_text() == before  # finished runs are not run again
    assert again["rows"][1]["mean"] == result["rows"][1]["mean"]


def test_an_unfinished_run_resumes(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE / "train"))
    overrides = {**TINY_RUN, "train.steps": 2, "run.checkpoint_every": 1}
    run_ablation(tmp_path, {**overrides, "train.steps": 1}, experiment="token_loss")
    run_dir = tmp_path / "0_seq_mean" / "seed0"
    assert (run_dir / "checkpoints").is_dir()
    run_ablation(tmp_path, overrides, experiment="token_loss")  # longer budget: resumes
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(1) == 1 and steps[-1] == 2
