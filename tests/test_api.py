"""The Python API: config layers, dapo eval's keys, and a tiny training run's result."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from tiny_run import TINY_RUN

import dapo_rl
from dapo_rl import DapoError, api, make_config
from dapo_rl.config import Config


@pytest.fixture(autouse=True)
def _toy_rewards_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "train"))


def test_layers_merge_in_order(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("train:\n  steps: 7\n  lr: 2e-5\nrollout:\n  group_size: 4\n")
    cfg = make_config(
        {"algo": {"eps_high": 0.3}, "train.steps": 3},  # nested and dotted
        yaml_file,  # a YAML path: steps 7 wins over 3
        ["rollout.group_size=6", {"run.seed": 5}],  # KEY=VALUE text and dicts
        train__lr=3e-5,  # keywords last
    )
    assert isinstance(cfg, Config)
    assert (cfg.algo.eps_high, cfg.train.steps, cfg.train.lr) == (0.3, 7, 3e-5)
    assert (cfg.rollout.group_size, cfg.run.seed) == (6, 5)
    assert make_config(cfg, "train.steps=1").train.steps == 1  # a Config is a layer too
    grpo = make_config(preset="grpo")
    assert grpo.preset == "grpo" and grpo.algo.kl_coef == 0.04


def test_bad_input_is_a_dapo_error():
    with pytest.raises(DapoError, match="did you mean algo.eps_high"):
        make_config("algo.eps_hgh=0.3")
    with pytest.raises(DapoError, match="cannot read config file nope.yaml"):
        make_config("nope.yaml")
    with pytest.raises(DapoError, match="make_config argument 1"):
        make_config(42)


def test_eval_settings_take_only_data_rewards_rollout_keys():
    got = api.eval_settings(
        {
            "data.prompt_template": "{Body} {Question}",
            "data.answer_field": "Answer",
            "rewards.fn": "gsm8k",
            "rollout.max_new_tokens": 32,
        }
    )
    assert got == {
        "verifier": "gsm8k",
        "max_new_tokens": 32,
        "fields": {"answer_field": "Answer", "prompt_template": "{Body} {Question}"},
    }
    with pytest.raises(DapoError, match="not algo.eps_high"):
        api.eval_settings({"algo.eps_high": 0.3})
    with pytest.raises(DapoError, match="rollout.max_new_tokens must be >= 1"):
        api.eval_settings({"rollout.max_new_tokens": 0})


def test_train_returns_metrics_samples_and_checkpoint(tmp_path):
    importlib.import_module("dapo_rl.train.loop")  # the subpackage must not hide the function

    result = dapo_rl.run_training(
        TINY_RUN, run__dir=str(tmp_path / "run"), train__lr_schedule="linear"
    )
    assert [r["step"] for r in result.metrics] == [0, 1, 2]
    assert result.final["step"] == 2 and "eval/acc" in result.final
    assert result.config.train.lr_schedule == "linear"
    assert {s["kind"] for s in result.samples} == {"train", "eval"}
    assert result.checkpoint is not None and (result.checkpoint / "config.json").exists()
    res = dapo_rl.evaluate(
        result.checkpoint,
        Path(__file__).parent / "fixtures" / "gsm8k_small.jsonl",
        result.config,  # its data, rewards and rollout keys
        limit=2,
    )
    assert res["verifier"] == "toy_rewards:length_parity" and res["n"] == 2
    assert res["max_new_tokens"] == 8 and res["template"] == "dapo"
