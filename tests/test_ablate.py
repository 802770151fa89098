"""The seeded ablation: row definitions, per-run summaries, and a tiny end-to-end run that
resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_run import TINY_RUN

from dapo_rl.ablate import (
    EXPERIMENTS,
    SINGLE_FIX,
    TASKS,
    aggregate_rows,
    plan,
    rows,
    run_ablation,
    summarize_run,
    task_overrides,
)
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


def test_headline_is_the_cumulative_tables_first_and_last_rows():
    assert rows("headline") == [rows()[0], ("dapo", rows()[-1][1])]


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e in SINGLE_FIX])
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


def _seeds(values):
    return [{"seed": s, "run_dir": "", "metrics": {"x": v}} for s, v in enumerate(values)]


def test_rows_are_compared_seed_by_seed():
    out = aggregate_rows(["a", "b"], [_seeds([1.0, 2.0, 3.0]), _seeds([2.1, 3.2, 4.0])])
    assert out[0]["mean"]["x"] == 2.0 and "diff" not in out[0]
    # mean 2, Bessel sd 1: half width t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321 = 2.4841
    assert out[0]["ci95"]["x"] == pytest.approx([2 - 2.4841, 2 + 2.4841], abs=1e-4)
    diff = out[1]["diff"]  # differences 1.1, 1.2, 1.0: sd 0.1, half width 0.2484
    assert diff["vs"] == "a" and diff["mean"]["x"] == pytest.approx(1.1)
    assert diff["ci95"]["x"] == pytest.approx([1.1 - 0.2484, 1.1 + 0.2484], abs=1e-4)
    assert diff["excludes_zero"]["x"]
    wide = aggregate_rows(["a", "b"], [_seeds([1.0, 2.0, 3.0]), _seeds([3.0, 5.0, 4.0])])
    assert not wide[1]["diff"]["excludes_zero"]["x"]  # differences 2, 3, 1: [-0.48, 4.48]


def test_one_seed_has_a_mean_but_no_interval():
    out = aggregate_rows(["a", "b"], [_seeds([1.0]), _seeds([2.0])])
    assert out[0]["mean"] == {"x": 1.0} and out[0]["ci95"] == {}
    assert out[1]["diff"]["mean"] == {"x": 1.0} and not out[1]["diff"]["excludes_zero"]["x"]


def _row(name, **per_metric):
    seeds = [{"seed": i, "metrics": {k: v[i] for k, v in per_metric.items()}} for i in range(3)]
    return {"name": name, "seeds": seeds, "mean": {k: sum(v) / 3 for k, v in per_metric.items()}}


def test_verdicts_compare_each_expected_row_with_the_fix_off_seed_by_seed():
    from dapo_rl.ablate import verdict_table, verdicts

    off = _row("eps_high_0.20", clip_high_frac=[0.1, 0.2, 0.3], entropy_last_quarter=[1, 2, 3])
    on = _row("eps_high_0.28", clip_high_frac=[0.3, 0.5, 0.6], entropy_last_quarter=[1, 3, 2])
    found = verdicts("clip_higher", [off, on])
    assert [(v["metric"], v["expected"]) for v in found] == [
        ("clip_high_frac", "down"),
        ("entropy_last_quarter", "up"),
    ]
    clip, entropy = found
    # differences 0.2, 0.3, 0.3: mean 0.2667, s = 0.0577, half-width 4.3027 * s / sqrt(3)
    assert clip["diff"] == pytest.approx(0.8 / 3)
    assert clip["ci95"] == pytest.approx([0.8 / 3 - 0.14342, 0.8 / 3 + 0.14342], abs=1e-4)
    assert clip["verdict"] == "opposite"  # up, where the paper expects down
    assert entropy["diff"] == 0 and entropy["verdict"] == "no clear change"
    on["seeds"][2]["metrics"]["entropy_last_quarter"] = 4  # differences 0, 1, 1
    assert verdicts("clip_higher", [off, on])[1]["verdict"] == "no clear change"
    for s, d in zip(on["seeds"], (0.9, 1.0, 1.1), strict=True):
        s["metrics"]["entropy_last_quarter"] = (s["seed"] + 1) + d
    assert verdicts("clip_higher", [off, on])[1]["verdict"] == "as expected"
    assert "| eps_high_0.28 vs eps_high_0.20 | clip_high_frac | down:" in verdict_table(found)
    assert verdicts("cumulative", [off, on]) == []  # no expectation: nothing to judge


def test_tiny_seeded_ablation_writes_intervals_and_skips_finished_runs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE / "train"))
    overrides = {**TINY_RUN, "train.steps": 1, "algo.max_gen_rounds": 2}
    result = run_ablation(tmp_path, overrides, seeds=[0, 1], experiment="clip_higher")
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved["seeds"] == [0, 1]
    assert [r["name"] for r in saved["rows"]] == ["eps_high_0.20", "eps_high_0.28"]
    first, second = saved["rows"]
    assert [s["seed"] for s in first["seeds"]] == [0, 1]
    assert "eval_acc_end" in first["mean"] and "entropy_last_quarter" in second["diff"]["mean"]
    assert first["seeds"][0]["curves"]["entropy/mean"]["steps"] == [1]
    assert "interval excludes zero" in (tmp_path / "ablation.md").read_text()
    assert [v["metric"] for v in saved["verdicts"]] == ["clip_high_frac", "entropy_last_quarter"]
    assert "Against what the paper says" in (tmp_path / "ablation.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert "eps_high_0.28" in html
    run = tmp_path / "0_eps_high_0.20" / "seed1" / "metrics.jsonl"
    assert not list(tmp_path.rglob("checkpoints"))  # a finished run's are removed
    before = run.read_text()
    again = run_ablation(tmp_path, overrides, seeds=[0, 1], experiment="clip_higher")
    assert run.read_text() == before  # finished runs are not run again
    assert again["rows"][1]["mean"] == result["rows"][1]["mean"]


def test_an_unfinished_run_resumes(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE / "train"))
    overrides = {**TINY_RUN, "train.steps": 2, "run.checkpoint_every": 1}
    run_ablation(
        tmp_path, {**overrides, "train.steps": 1}, experiment="token_loss", keep_checkpoints=True
    )
    run_dir = tmp_path / "0_seq_mean" / "seed0"
    assert (run_dir / "checkpoints").is_dir()
    run_ablation(tmp_path, overrides, experiment="token_loss")  # longer budget: resumes
    assert not (run_dir / "checkpoints").exists()
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(1) == 1 and steps[-1] == 2


def test_a_run_directory_of_another_config_is_refused_before_anything_runs(tmp_path, capsys):
    from dapo_rl import cli

    run_dir = tmp_path / "1_token_mean" / "seed0"
    run_dir.mkdir(parents=True)
    mine = plan(tmp_path, "token_loss", [0], {"train.steps": 3})[1]
    (run_dir / "config.yaml").write_text(
        json.dumps({k: v for k, v in mine.items() if k != "preset"} | {"preset": "dapo"})
    )
    plan(tmp_path, "token_loss", [0], {"train.steps": 5})  # a resumable key may differ
    with pytest.raises(DapoError, match="holds a run with another config than this row's"):
        plan(tmp_path, "token_loss", [0], {"train.steps": 3, "train.lr": 2e-5})
    (run_dir / "config.yaml").write_text("[not a mapping")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rc = cli.main(["ablate", "--experiment", "token_loss", "--out", str(tmp_path)])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {run_dir} is not a run")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_the_task_option_puts_its_overrides_under_every_row(tmp_path):
    tight = task_overrides("tight")
    assert tight and tight == TASKS["tight"]
    runs = plan(tmp_path, "clip_higher", [0, 1], {"train.steps": 3}, task="tight")
    assert len(runs) == 4
    for values in runs:
        cfg = build(overrides=values)
        for key, value in tight.items():
            section, field = key.split(".")
            assert getattr(getattr(cfg, section), field) == value, key
        assert cfg.train.steps == 3
    mine = plan(tmp_path, "clip_higher", [0], {"rollout.max_new_tokens": 40}, task="tight")
    assert build(overrides=mine[0]).rollout.max_new_tokens == 40  # the command line wins
    hot = plan(tmp_path, "token_loss", [0], {}, task="hot")
    assert {build(overrides=v).rollout.temperature for v in hot} == {1.3}
    quick = plan(tmp_path, "clip_higher", [0], {})  # the default task is the config's defaults
    assert build(overrides=quick[0]).data == build().data
    with pytest.raises(DapoError, match="unknown task 'nope': use one of arithmetic, tight, hot"):
        plan(tmp_path, "clip_higher", [0], {}, task="nope")


def test_a_bad_task_is_one_error_line_and_writes_nothing(tmp_path, capsys):
    from dapo_rl import cli

    out = tmp_path / "abl"
    rc = cli.main(["ablate", "--task", "nope", "--out", str(out)])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and err == ["error: unknown task 'nope': use one of arithmetic, tight, hot"]
    assert not out.exists()
