"""End-to-end runs of the loop on the tiny model: outputs, determinism, resume, presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_run import comparable, tiny_cfg

from dapo_rl.errors import DapoError
from dapo_rl.metrics import read_metrics
from dapo_rl.train.loop import train

HERE = Path(__file__).parent
REQUIRED = [
    "step",
    "reward/mean",
    "acc/mean",
    "entropy/mean",
    "len/mean",
    "len/truncated_frac",
    "clip/high_frac",
    "clip/low_frac",
    "ds/zero_var_frac",
    "ds/gen_rounds",
    "loss/policy",
    "grad/norm",
    "time/step",
    "throughput/gen_tokens_per_s",
]


@pytest.fixture(autouse=True)
def _toy_rewards_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def test_run_writes_config_metrics_and_checkpoint(tmp_path):
    run = train(tiny_cfg(tmp_path / "run", **{"eval.every": 1}))
    records = read_metrics(run)
    assert [r["step"] for r in records] == [0, 1, 2]
    assert "eval/acc" in records[0] and all("eval/acc" in r for r in records)
    for r in records[1:]:
        missing = [k for k in REQUIRED if k not in r]
        assert not missing, missing
    # the run's wall clock: loading included, so positive at step 0, then rising by at
    # least each step's own time
    clock = [r["time/run"] for r in records]
    assert clock[0] > 0
    for before, r in zip(clock, records[1:], strict=False):
        assert r["time/run"] >= before + r["time/step"]
    saved = (run / "config.yaml").read_text()
    assert "tiny-random" in saved and "length_parity" in saved
    ckpt = run / "checkpoints" / "step_000002"
    assert (ckpt / "trainer.pt").exists() and (ckpt / "model" / "config.json").exists()


def test_same_seed_gives_the_same_metrics(tmp_path):
    a = read_metrics(train(tiny_cfg(tmp_path / "a", **{"train.steps": 3})))
    b = read_metrics(train(tiny_cfg(tmp_path / "b", **{"train.steps": 3})))
    c = read_metrics(train(tiny_cfg(tmp_path / "c", **{"train.steps": 3, "run.seed": 1})))
    assert comparable(a) == comparable(b)
    assert comparable(a) != comparable(c)


def test_resume_continues_exactly(tmp_path):
    # eval every 2 steps so the stopped run's final evaluation is also in the full run
    every = {"run.checkpoint_every": 2, "eval.every": 2}
    full = read_metrics(train(tiny_cfg(tmp_path / "full", **{"train.steps": 4, **every})))
    part = tmp_path / "part"
    train(tiny_cfg(part, **{"train.steps": 2, **every}))
    # a record written after the checkpoint (as if killed mid-way) is cut on resume
    with (part / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 3, "acc/mean": 123.0}) + "\n")
    train(tiny_cfg(part, **{"train.steps": 4, "resume": True, **every}))
    assert comparable(read_metrics(part)) == comparable(full)
    w_full = torch.load(tmp_path / "full/checkpoints/step_000004/trainer.pt", weights_only=False)
    w_part = torch.load(part / "checkpoints/step_000004/trainer.pt", weights_only=False)
    assert w_full["stream"] == w_part["stream"]


def test_existing_run_is_refused_and_left_untouched(tmp_path):
    run = train(tiny_cfg(tmp_path / "run", **{"train.steps": 1}))
    before = (run / "metrics.jsonl").read_text()
    with pytest.raises(DapoError, match="already holds a run"):
        train(tiny_cfg(run, **{"train.steps": 1}))
    assert (run / "metrics.jsonl").read_text() == before
    with pytest.raises(DapoError, match="differs"):
        train(tiny_cfg(run, **{"train.steps": 2, "resume": True, "train.lr": 0.5}))
    train(tiny_cfg(run, **{"train.steps": 1, "run.overwrite": True, "run.seed": 5}))
    assert (run / "metrics.jsonl").read_text() != before


def test_grpo_preset_loads_a_reference_and_logs_kl(tmp_path):
    # one optimizer step per rollout: the first step's KL is measured before any update
    cfg = tiny_cfg(tmp_path / "run", **{"preset": "grpo", "train.mini_batches_per_step": 1})
    assert cfg.algo.kl_coef > 0
    records = read_metrics(train(cfg))
    assert "kl/mean" in records[-1]
    assert records[1]["kl/mean"] == pytest.approx(0.0, abs=1e-6)  # first step: policy == reference
    assert records[2]["kl/mean"] > 0


def test_dynamic_sampling_off_trains_on_every_group(tmp_path):
    records = read_metrics(train(tiny_cfg(tmp_path / "run", **{"algo.dynamic_sampling": False})))
    assert all(r["ds/gen_rounds"] == 1 for r in records[1:])


SAMPLER_METRICS = [
    "ds/gen_tokens",
    "ds/carried_groups",
    "ds/skipped_prompts",
    "ds/retired_prompts",
    "ds/explore_easy",
    "ds/explore_hard",
    "ds/seen_before_frac",
]


def test_predictive_skip_and_carry_over_log_their_metrics_and_resume_exactly(tmp_path):
    # 9 problems (sums of 1..3), 2 held out: training prompts repeat every few steps;
    # groups of 2 come out all-equal often, so prompts get skipped
    over = {
        "data.max_value": 3,
        "eval.size": 2,
        "rollout.group_size": 2,
        "rollout.prompts_per_step": 3,
        "algo.predictive_skip": True,
        "algo.carry_over": True,
        "run.checkpoint_every": 3,
        "eval.every": 3,
    }
    full = read_metrics(train(tiny_cfg(tmp_path / "full", **{"train.steps": 6, **over})))
    steps = full[1:]
    for r in steps:
        missing = [k for k in SAMPLER_METRICS if k not in r]
        assert not missing, missing
    assert sum(r["ds/skipped_prompts"] for r in steps) > 0
    assert sum(r["ds/carried_groups"] for r in steps) > 0
    assert any("ds/predicted_zero_var_frac" in r for r in steps)
    part = tmp_path / "part"
    train(tiny_cfg(part, **{"train.steps": 3, **over}))
    train(tiny_cfg(part, **{"train.steps": 6, "resume": True, **over}))
    assert comparable(read_metrics(part)) == comparable(full)
