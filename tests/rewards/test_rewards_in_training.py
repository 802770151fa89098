"""A reward of 1e39 in a training run: counted in reward/errors as wrong, never a NaN update."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from tiny_run import tiny_cfg

from dapo_rl.metrics import read_metrics
from dapo_rl.train.loop import train

HERE = Path(__file__).parent


def test_rewards_beyond_float32_are_errors_and_the_update_stays_finite(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    cfg = tiny_cfg(tmp_path / "run", **{"rewards.fn": "dapo_test_verifiers:huge_every_third"})
    run = train(cfg)
    steps = read_metrics(run)[1:]
    assert [r["step"] for r in steps] == [1, 2]
    assert sum(r["reward/errors"] for r in steps) > 0
    assert all(r.get("grad/skipped_steps", 0) == 0 for r in steps)
    assert all(torch.isfinite(torch.tensor(r["loss/policy"])) for r in steps)
    weights = load_file(run / "checkpoints" / "step_000002" / "model" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
