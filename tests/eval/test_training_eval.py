"""Periodic evaluation in a training run: several ``eval.path`` files and ``eval.k``."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_run import tiny_cfg as shared_tiny_cfg

from dapo_rl.errors import DapoError
from dapo_rl.metrics import read_metrics
from dapo_rl.train.loop import build_state, train

TESTS = Path(__file__).parents[1]
GSM8K, ASDIV = TESTS / "fixtures" / "gsm8k_small.jsonl", TESTS / "fixtures" / "asdiv_small.jsonl"
METRICS = ("acc", "avg@2", "pass@2", "maj@2", "len_mean", "truncated_frac", "n")


@pytest.fixture(autouse=True)
def _toy_rewards_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS / "train"))


def tiny_cfg(run_dir, **overrides):
    evals = {
        "eval.size": 3,
        "eval.k": 2,
        "eval.path": f"{GSM8K},{ASDIV}",
        "train.steps": 1,
        "algo.dynamic_sampling": False,
    }  # one generation round: this file tests evaluation
    return shared_tiny_cfg(run_dir, **{**evals, **overrides})


def test_each_file_is_logged_under_its_name(tmp_path):
    cfg = tiny_cfg(tmp_path / "run")
    records = read_metrics(train(cfg))
    assert [r["step"] for r in records] == [0, 1]
    for r in records:
        for prefix in ("eval/", "eval/gsm8k_small/", "eval/asdiv_small/"):
            missing = [prefix + m for m in METRICS if prefix + m not in r]
            assert not missing, missing
        assert r["eval/n"] == 3 and r["eval/gsm8k_small/n"] == 3  # eval.size rows each
        assert r["eval/asdiv_small/n"] == 3
    # the arithmetic task keeps its own held-out set under eval/
    state = build_state(cfg)
    assert [f.name for f in state.eval_files] == ["gsm8k_small", "asdiv_small"]
    assert state.eval_set[0].problem not in {ex.problem for ex in state.eval_files[0].examples}
    assert state.eval_files[1].examples[0].answer == "9"  # "9 (apples)" in the file


def test_a_file_task_reports_its_first_file_as_eval(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", **{"data.task": "file", "data.path": str(GSM8K)})
    first = read_metrics(train(cfg))[0]
    for m in METRICS:
        assert first[f"eval/{m}"] == first[f"eval/gsm8k_small/{m}"]
    assert "eval/asdiv_small/maj@2" in first


def test_greedy_only_by_default_and_bad_files_fail_before_the_run(tmp_path):
    with pytest.raises(DapoError, match="dataset file not found: nope.jsonl"):
        train(tiny_cfg(tmp_path / "bad", **{"eval.path": f"{GSM8K}, nope.jsonl"}))
    assert not (tmp_path / "bad").exists()
    with pytest.raises(DapoError, match="eval.k must be >= 0"):
        tiny_cfg(tmp_path / "bad", **{"eval.k": -1})
    cfg = tiny_cfg(tmp_path / "run", **{"eval.k": 0, "eval.path": str(ASDIV)})
    first = read_metrics(train(cfg))[0]
    assert "eval/asdiv_small/acc" in first and "eval/asdiv_small/avg@2" not in first
    assert not any("@" in key for key in first)
