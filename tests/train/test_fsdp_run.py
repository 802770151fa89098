"""FSDP runs end to end on 2 gloo ranks: sharded checkpoints, resume, export.

A tiny untied Qwen2 (``untied_model``) trains for 3 steps under ``torchrun`` twice, with
``train.fsdp`` (sharded weights and DCP checkpoints) and without (whole replicas): both
take the same steps, so their exported models must agree. A copy of the FSDP run with its
last checkpoint removed resumes from the sharded step-2 checkpoint and must end where the
straight run ended; one process (a world of 1) must load the 2-rank checkpoint.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import TINY_RUN, comparable
from untied_model import save_untied

from dapo_rl.config import build
from dapo_rl.metrics import read_metrics
from dapo_rl.train import checkpoint
from dapo_rl.train.export import export
from dapo_rl.train.loop import build_state

HERE = Path(__file__).parent
pytestmark = pytest.mark.slow  # three 2-process training runs: about a minute or more


def _settings(model_dir: Path, run_dir: Path, **extra) -> dict:
    return {
        **TINY_RUN,
        "model.name": str(model_dir),
        "run.dir": str(run_dir),
        "eval.every": 0,
        "train.steps": 3,
        "run.checkpoint_every": 1,
        "run.keep_checkpoints": 3,
        "run.threads": 1,
        **extra,
    }


def _torchrun(settings: dict) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = [f"{k}={v}" for k, v in settings.items()]
    proc = subprocess.run(
        [*cmd, "-m", "dapo_rl.cli", "train", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


@pytest.fixture(autouse=True)
def _toy_rewards_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp_run")
    model_dir = save_untied(tmp / "untied")
    _torchrun(_settings(model_dir, tmp / "fsdp", **{"train.fsdp": True}))
    _torchrun(_settings(model_dir, tmp / "replicas"))
    resumed = tmp / "resumed"
    shutil.copytree(tmp / "fsdp", resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_000003")
    _torchrun(_settings(model_dir, resumed, **{"train.fsdp": True, "resume": True}))
    return {"model": model_dir, "fsdp": tmp / "fsdp", "replicas": tmp / "replicas",
            "resumed": resumed, "tmp": tmp}  # fmt: skip


def _exported(run_dir: Path, out: Path) -> dict[str, torch.Tensor]:
    export(run_dir, out)
    tensors = {}
    for f in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(f))
    return tensors


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def test_fsdp_checkpoints_are_sharded_per_rank_and_listed(runs):
    ckpt = runs["fsdp"] / "checkpoints" / "step_000003"
    listed = checkpoint.listed_files(ckpt)
    assert {"dcp/__0_0.distcp", "dcp/__1_0.distcp", "dcp/.metadata", "trainer.pt"} <= set(listed)
    assert not [n for n in listed if n.endswith(".safetensors")]  # no gathered copy
    assert checkpoint.problem(ckpt) is None


def test_fsdp_export_equals_the_whole_replica_run_lm_head_included(runs):
    tmp = runs["tmp"]
    sharded = _exported(runs["fsdp"], tmp / "export_fsdp")
    whole = _exported(runs["replicas"], tmp / "export_replicas")
    assert sharded.keys() == whole.keys() and "lm_head.weight" in sharded
    start = load_file(runs["model"] / "model.safetensors")
    assert _max_rel_diff(sharded["lm_head.weight"], start["lm_head.weight"]) > 1e-4  # trained
    for name, tensor in whole.items():
        assert _max_rel_diff(sharded[name], tensor) <= 1e-3, name
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp / "export_fsdp")
    assert torch.equal(model.lm_head.weight, sharded["lm_head.weight"])
    assert model.lm_head.weight is not model.get_input_embeddings().weight


def test_fsdp_resume_from_the_sharded_checkpoint_equals_the_straight_run(runs):
    tmp = runs["tmp"]
    assert comparable(read_metrics(runs["resumed"])) == comparable(read_metrics(runs["fsdp"]))
    straight = _exported(runs["fsdp"], tmp / "export_straight")
    resumed = _exported(runs["resumed"], tmp / "export_resumed")
    for name, tensor in straight.items():
        assert torch.equal(resumed[name], tensor), name


def test_one_process_resumes_a_two_rank_checkpoint(runs):
    run = runs["tmp"] / "world1"
    shutil.copytree(runs["fsdp"], run)
    cfg = build(overrides=_settings(runs["model"], run, **{"train.fsdp": True, "resume": True}))
    state = build_state(cfg)  # a world of 1: the model whole
    assert checkpoint.load_latest(run, state) == 3
    want = _exported(runs["fsdp"], runs["tmp"] / "export_world1")
    got = state.model.state_dict()
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name
    assert len(state.optimizer.state) == len(list(state.model.parameters()))  # AdamW moments
