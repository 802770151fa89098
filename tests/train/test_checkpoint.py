"""Checkpoints on the tiny model: manifest, corruption detection and fallback, retention.

One 3-step run (a checkpoint every step, three kept) is made once per module; each test
copies its run directory and damages the copy.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_run import comparable
from tiny_run import tiny_cfg as shared_tiny_cfg

from dapo_rl.errors import DapoError
from dapo_rl.metrics import read_metrics
from dapo_rl.train import checkpoint
from dapo_rl.train.loop import build_state, train

HERE = Path(__file__).parent


def tiny_cfg(run_dir, **overrides):
    every_step = {
        "eval.every": 0,
        "train.steps": 3,
        "run.checkpoint_every": 1,
        "run.keep_checkpoints": 3,
    }
    return shared_tiny_cfg(run_dir, **{**every_step, **overrides})


@pytest.fixture(autouse=True)
def _toy_rewards_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    import sys

    sys.path.insert(0, str(HERE))
    try:
        return train(tiny_cfg(tmp_path_factory.mktemp("full") / "run"))
    finally:
        sys.path.remove(str(HERE))


@pytest.fixture
def run_copy(done_run, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(done_run, dest)
    return dest


def _ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:06d}"


def _load(run: Path):
    """(step restored, warnings logged) for a fresh state of the run's config."""
    state = build_state(tiny_cfg(run))
    logged: list[str] = []
    return checkpoint.load_latest(run, state, log=logged.append), logged, state


def test_manifest_lists_every_file_with_size_and_sha256(done_run):
    ckpt = _ckpt(done_run, 3)
    manifest = json.loads((ckpt / checkpoint.MANIFEST).read_text())
    assert manifest["step"] == 3
    assert manifest["config_hash"] == checkpoint.config_hash(tiny_cfg(done_run))
    on_disk = {
        p.relative_to(ckpt).as_posix()
        for p in ckpt.rglob("*")
        if p.is_file() and p.name != checkpoint.MANIFEST
    }
    assert set(manifest["files"]) == on_disk
    assert {"trainer.pt", "model/config.json", "model/model.safetensors"} <= on_disk
    for name, meta in manifest["files"].items():
        assert meta["size"] == (ckpt / name).stat().st_size
        assert meta["sha256"] == checkpoint._sha256(ckpt / name)
    assert checkpoint.problem(ckpt) is None


def test_trainer_state_holds_every_rng_and_the_picker_state(done_run):
    t = checkpoint._load_trainer_state(_ckpt(done_run, 3) / "trainer.pt")  # weights_only
    expected = {
        "step",
        "optimizer",
        "scheduler",
        "generator",
        "torch_rng",
        "python_rng",
        "numpy_rng",
        "stream",
        "pass_rate",
        "picker",
        "skipped_in_a_row",
    }
    assert expected <= set(t)
    assert t["step"] == 3 and t["stream"]["position"] > 0
    assert 0 < t["pass_rate"] <= 1
    assert t["picker"]["steps"] == 3 and t["picker"]["history"]  # every sampled prompt


def test_a_checkpoint_that_names_the_picker_state_sampler_still_resumes(run_copy):
    # written before the prompt picker's rename: its state under the key "sampler"
    ckpt = _ckpt(run_copy, 3)
    t = torch.load(ckpt / "trainer.pt", weights_only=False)
    t["sampler"] = t.pop("picker")
    torch.save(t, ckpt / "trainer.pt")
    (ckpt / checkpoint.MANIFEST).unlink()
    checkpoint._write_manifest(ckpt, 3, checkpoint.config_hash(tiny_cfg(run_copy)))
    step, logged, state = _load(run_copy)
    assert step == 3 and logged == []
    restored = state.picker.state_dict()
    assert restored["steps"] == 3 and restored["history"] == t["sampler"]["history"]


def test_restore_sets_python_numpy_and_torch_rngs(tmp_path):
    state = build_state(tiny_cfg(tmp_path / "run"))
    state.step = 1
    checkpoint.save(tmp_path / "run", state, keep=1)
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    fresh = build_state(tiny_cfg(tmp_path / "run"))
    assert checkpoint.load_latest(tmp_path / "run", fresh) == 1
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws


def test_keeps_the_last_k_and_leaves_no_temporary_directory(done_run, tmp_path):
    names = sorted(p.name for p in (done_run / "checkpoints").iterdir())
    assert names == ["step_000001", "step_000002", "step_000003"]
    run = tmp_path / "run"
    train(tiny_cfg(run, **{"run.keep_checkpoints": 1, "train.steps": 2}))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000002"]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# name -> (damage done to the newest checkpoint, text the warning must hold)
DAMAGE = {
    "missing_manifest": (lambda c: (c / "manifest.json").unlink(), "no manifest.json"),
    "unreadable_manifest": (
        lambda c: (c / "manifest.json").write_text("{not json"),
        "unreadable manifest.json",
    ),
    "truncated_weights": (lambda c: _truncate(c / "model/model.safetensors"), "truncated"),
    "flipped_byte": (lambda c: _flip_byte(c / "trainer.pt"), "trainer.pt fails its sha256"),
    "missing_file": (lambda c: (c / "trainer.pt").unlink(), "trainer.pt is missing"),
}


@pytest.mark.parametrize("damage, reason", DAMAGE.values(), ids=list(DAMAGE))
def test_a_damaged_checkpoint_is_refused_naming_it_and_the_previous_is_used(
    run_copy, damage, reason
):
    damage(_ckpt(run_copy, 3))
    step, logged, state = _load(run_copy)
    assert step == 2 and state.step == 2
    assert len(logged) == 1
    assert "step_000003" in logged[0] and reason in logged[0], logged[0]
    assert "\n" not in logged[0]


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(run_copy):
    for step in (1, 2, 3):
        (_ckpt(run_copy, step) / "trainer.pt").unlink()
    with pytest.raises(DapoError, match="no usable checkpoint.*step_000001.*run.overwrite=true"):
        _load(run_copy)


def test_a_checkpoint_of_another_config_is_refused(run_copy):
    state = build_state(tiny_cfg(run_copy, **{"algo.eps_high": 0.3}))
    with pytest.raises(DapoError, match="different config"):
        checkpoint.load_latest(run_copy, state, log=lambda _: None)
    # keys a resume may change do not change the hash
    assert checkpoint.config_hash(tiny_cfg(run_copy, **{"train.steps": 9})) == (
        checkpoint.config_hash(tiny_cfg(run_copy))
    )


def test_resume_past_a_corrupt_checkpoint_equals_the_uninterrupted_run(done_run, run_copy):
    _flip_byte(_ckpt(run_copy, 3) / "model/model.safetensors")
    (run_copy / "checkpoints" / ".tmp_step_000004").mkdir()  # a kill mid-write
    train(tiny_cfg(run_copy, resume=True))
    assert comparable(read_metrics(run_copy)) == comparable(read_metrics(done_run))
    assert checkpoint.problem(_ckpt(run_copy, 3)) is None  # rewritten by the resumed run
    assert not list((run_copy / "checkpoints").glob(".tmp_*"))
    a = torch.load(_ckpt(run_copy, 3) / "trainer.pt", weights_only=True)
    b = torch.load(_ckpt(done_run, 3) / "trainer.pt", weights_only=True)
    assert a["stream"] == b["stream"] and a["pass_rate"] == b["pass_rate"]
    assert torch.equal(a["generator"], b["generator"])


def test_resume_without_a_checkpoint_starts_over_without_duplicate_records(run_copy, done_run):
    shutil.rmtree(run_copy / "checkpoints")
    with (run_copy / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "acc/m')  # a line cut short by a kill
    train(tiny_cfg(run_copy, resume=True))
    records = read_metrics(run_copy)
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert records[-1]["acc/mean"] == read_metrics(done_run)[-1]["acc/mean"]


class _Planted:
    """A pickle payload: unpickling it writes ``marker`` (as any code could run)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def _rehash(ckpt: Path) -> None:
    """Rewrite the manifest so that it vouches for the files as they are now."""
    m = json.loads((ckpt / checkpoint.MANIFEST).read_text())
    (ckpt / checkpoint.MANIFEST).unlink()
    checkpoint._write_manifest(ckpt, m["step"], m["config_hash"])


def test_a_planted_pickle_in_trainer_pt_is_refused_not_run(run_copy, tmp_path):
    ckpt = _ckpt(run_copy, 3)
    state = torch.load(ckpt / "trainer.pt", weights_only=True)
    marker = tmp_path / "pwned"
    torch.save({**state, "pass_rate": _Planted(marker)}, ckpt / "trainer.pt")
    _rehash(ckpt)  # a correct manifest: integrity holds, authorship does not
    assert checkpoint.problem(ckpt) is None
    step, logged, _ = _load(run_copy)
    assert not marker.exists()  # never unpickled as code
    assert step == 2 and len(logged) == 1 and "\n" not in logged[0]
    assert "step_000003" in logged[0] and "trainer.pt holds objects other than" in logged[0]
    torch.load(ckpt / "trainer.pt", weights_only=False)  # safe: control, the payload is live
    assert marker.read_text() == "ran"


def test_a_file_the_manifest_does_not_list_is_refused_and_the_previous_used(run_copy):
    ckpt = _ckpt(run_copy, 3)
    from safetensors.torch import load_file, save_file

    weights = load_file(ckpt / "model/model.safetensors")
    emb = "model.embed_tokens.weight"
    save_file({emb: torch.zeros_like(weights[emb])}, ckpt / "model/extra.safetensors")
    step, logged, state = _load(run_copy)
    assert step == 2 and len(logged) == 1
    assert "model/extra.safetensors, which manifest.json does not list" in logged[0]
    assert state.model.get_input_embeddings().weight.abs().sum() > 0


# --- sharded state (DCP) in one process, and its metadata read without pickle ------------


def test_dcp_state_round_trips_in_one_process_untied_head_and_adamw_included(tmp_path):
    from untied_model import untied_model

    from dapo_rl.train import dcp

    model = untied_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    dcp.save(tmp_path / "dcp", model, opt)
    tensors = dcp.model_tensors(tmp_path / "dcp")
    head = model.lm_head.weight
    assert tensors["lm_head.weight"] == (head.shape, torch.float32)
    assert torch.equal(
        dcp.read_tensor(tmp_path / "dcp", "lm_head.weight", *tensors["lm_head.weight"]), head
    )
    fresh = untied_model(seed=1)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    dcp.load(tmp_path / "dcp", fresh, fresh_opt)
    for (name, a), b in zip(model.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b), name
        assert torch.equal(opt.state[a]["exp_avg"], fresh_opt.state[b]["exp_avg"]), name


def test_planted_dcp_metadata_is_refused_not_run(tmp_path):
    import pickle

    from dapo_rl.train import dcp

    marker = tmp_path / "pwned"
    (tmp_path / "dcp").mkdir()
    (tmp_path / "dcp" / ".metadata").write_bytes(pickle.dumps(_Planted(marker)))
    with pytest.raises(DapoError, match="will not parse safely.*pathlib.Path.write_text"):
        dcp.model_tensors(tmp_path / "dcp")
    assert not marker.exists()
    pickle.loads((tmp_path / "dcp" / ".metadata").read_bytes())  # safe: control
    assert marker.exists()


# --- dapo export ---------------------------------------------------------------------------


def test_export_writes_a_loadable_hugging_face_folder(done_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dapo_rl.train.export import export

    out = export(done_run, tmp_path / "hf", step=2)
    model = AutoModelForCausalLM.from_pretrained(out)
    state = build_state(tiny_cfg(done_run))
    checkpoint._restore(_ckpt(done_run, 2), state)
    for name, tensor in state.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert AutoTokenizer.from_pretrained(out).eos_token == state.tokenizer.eos_token


def test_export_shards_tensor_groups_into_several_files(tmp_path):
    from dapo_rl.train.export import _groups

    sizes = {"a": 6, "b": 5, "c": 1, "d": 20, "e": 2}
    # 6 + 5 > 10 starts a new file; d alone exceeds the limit and gets a file of its own
    assert _groups(sizes, 10) == [["a"], ["b", "c"], ["d"], ["e"]]


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt", "no_step"])
def test_export_refuses_a_bad_run_dir_with_one_line_and_writes_nothing(
    run_copy, tmp_path, capsys, case
):
    from dapo_rl.cli import main

    run = run_copy
    args = []
    if case == "missing":
        run = tmp_path / "nowhere"
    elif case == "empty":
        shutil.rmtree(run / "checkpoints")
    elif case == "corrupt":
        for step in (1, 2, 3):
            _flip_byte(_ckpt(run, step) / "trainer.pt")
    else:
        args = ["--step", "7"]
    out = tmp_path / "out"
    assert main(["export", str(run), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_export_merges_a_lora_adapter_into_the_base_weights(tmp_path):
    pytest.importorskip("peft", reason="LoRA export needs PEFT (the lora extra)")
    from transformers import AutoModelForCausalLM

    from dapo_rl import models
    from dapo_rl.train.export import export

    run = tmp_path / "run"
    lora = {"model.lora_rank": 4, "model.lora_alpha": 8.0, "train.steps": 1, "train.lr": 1e-2}
    train(tiny_cfg(run, **lora))
    out = export(run, tmp_path / "hf")
    assert not list(out.glob("adapter_*"))
    state = build_state(tiny_cfg(run, **lora))
    assert checkpoint.load_latest(run, state) == 1
    want = models.export_weights(state.model)  # base + scaled B @ A, computed apart
    got = AutoModelForCausalLM.from_pretrained(out).state_dict()
    base = models.load_model("tiny-random", seed=0).state_dict()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(got[q], base[q])  # the adapter moved it
    for name, tensor in want.items():
        assert torch.allclose(got[name], tensor, atol=1e-6), name
