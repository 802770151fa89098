"""Reliability of a run: kills and resumes, graceful stops, faulty rewards, divergence,
a dataset smaller than one step, and bad run directories.

The subprocess tests run ``python -m dapo_rl.cli train`` as a user would; one
uninterrupted reference run starts with the module and runs beside them. The others call
``train`` in this process on the tiny model.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_run import TINY_RUN, comparable

from dapo_rl.config import build
from dapo_rl.data.files import Example
from dapo_rl.data.stream import PromptStream
from dapo_rl.errors import DapoError
from dapo_rl.metrics import read_metrics
from dapo_rl.models import load_model
from dapo_rl.train import checkpoint, loop
from dapo_rl.train.loop import train
from dapo_rl.train.picker import PickerSettings, PromptPicker
from dapo_rl.train.signals import Interrupted
from dapo_rl.train.step import collect

HERE = Path(__file__).parent
CLI = [sys.executable, "-m", "dapo_rl.cli", "train"]
TIMEOUT = 300
SETTINGS = {
    **TINY_RUN,
    "eval.every": 0,
    "train.steps": 4,
    "run.checkpoint_every": 1,
    "run.threads": 1,
}


def tiny_cfg(run_dir, **overrides):
    return build(overrides={**SETTINGS, "run.dir": str(run_dir), **overrides})


@pytest.fixture(autouse=True)
def _toy_rewards_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


# --- subprocesses: SIGKILL and SIGINT, then resume ---------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env.pop("PYTHONWARNINGS", None)
    return env


def _start(run_dir: Path, *extra: str) -> subprocess.Popen:
    args = [f"{k}={v}" for k, v in SETTINGS.items()] + [f"run.dir={run_dir}", *extra]
    return subprocess.Popen(
        [*CLI, *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path) -> Path:
    """The first complete checkpoint, waiting while ``proc`` runs."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        done = sorted((run_dir / "checkpoints").glob("step_*/manifest.json"))
        if done:
            return done[0].parent
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, started at once; the fixture value waits for it."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = _start(run_dir)

    def records():
        if proc.returncode is None:
            proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0
        return read_metrics(run_dir)

    yield records
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_sigkill_between_checkpoints_then_resume_equals_the_uninterrupted_run(reference, tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(run_dir)
    _wait_for_checkpoint(proc, run_dir)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "checkpoints" / "step_000004").exists()  # killed mid-run
    resumed = subprocess.run(
        [*CLI, *[f"{k}={v}" for k, v in SETTINGS.items()], f"run.dir={run_dir}", "resume=true"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert resumed.returncode == 0, resumed.stderr
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert comparable(records) == comparable(reference())


def test_sigint_finishes_the_step_checkpoints_and_the_hinted_command_resumes_exactly(
    reference, tmp_path
):
    run_dir = tmp_path / "run"
    proc = _start(run_dir)
    _wait_for_checkpoint(proc, run_dir)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGINT after step "), err
    step = int(last.removeprefix("stopped by SIGINT after step ").split(";")[0])
    assert step < 4
    ckpt = run_dir / "checkpoints" / f"step_{step:06d}"
    assert f"checkpoint {ckpt}" in last and checkpoint.problem(ckpt) is None
    assert [r["step"] for r in read_metrics(run_dir)][-1] == step
    hint = last.split("resume with: ", 1)[1]
    argv = shlex.split(hint)
    assert argv[:2] == ["dapo", "train"] and argv[-1] == "resume=true"
    resumed = subprocess.run(
        [*CLI, *argv[2:]], env=_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(read_metrics(run_dir)) == comparable(reference())


# --- in process: signals -----------------------------------------------------------------


def test_first_signal_asks_to_stop_and_a_second_stops_at_once(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    with loop.StopSignals(tmp_path) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        with pytest.raises(Interrupted, match="stopped at once by a second SIGINT") as e:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler raises before this ends
        assert e.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is before  # restored


def _signal_during_step(monkeypatch, at_step: int, signals: list[int]) -> None:
    real = loop.train_step

    def step_with_signal(state):
        if state.step == at_step:
            for sig in signals:
                os.kill(os.getpid(), sig)
        return real(state)

    monkeypatch.setattr(loop, "train_step", step_with_signal)


def test_sigterm_mid_step_finishes_it_and_writes_a_checkpoint(tmp_path, monkeypatch):
    _signal_during_step(monkeypatch, 2, [signal.SIGTERM])
    cfg = tiny_cfg(tmp_path / "run", **{"run.checkpoint_every": 0})  # only the stop's
    with pytest.raises(Interrupted) as e:
        train(cfg)
    assert e.value.signum == signal.SIGTERM
    assert str(e.value).startswith("stopped by SIGTERM after step 2; checkpoint ")
    assert "resume with: dapo train --config" in str(e.value) and "\n" not in str(e.value)
    assert checkpoint.problem(tmp_path / "run/checkpoints/step_000002") is None
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [0, 1, 2]


def test_second_sigint_stops_at_once_without_finishing_the_step(tmp_path, monkeypatch):
    _signal_during_step(monkeypatch, 2, [signal.SIGINT, signal.SIGINT])
    with pytest.raises(Interrupted, match="stopped at once by a second SIGINT") as e:
        train(tiny_cfg(tmp_path / "run"))
    assert e.value.signum == signal.SIGINT
    names = [p.name for p in (tmp_path / "run/checkpoints").iterdir()]
    assert names == ["step_000001"]  # step 2 was never finished
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [0, 1]


# --- in process: faulty rewards, non-finite updates ---------------------------------------

FLAKY = """
import math
import time

LOG = {log!r}


def flaky(completion, reference):
    if reference.startswith("eval"):
        return len(completion) % 2 == 0
    kind = ("ok", "raise", "nan", "sleep")[len(completion) % 4]
    with open(LOG, "a") as f:
        f.write(kind + "\\n")
    if kind == "raise":
        raise ValueError("a bug in the reward function")
    if kind == "nan":
        return math.nan
    if kind == "sleep":
        time.sleep(60)
    return True
"""


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_reward_that_raises_returns_nan_or_hangs_is_counted_and_training_goes_on(
    tmp_path, monkeypatch
):
    log = tmp_path / "calls.txt"
    (tmp_path / "flaky_rewards.py").write_text(FLAKY.format(log=str(log)))
    monkeypatch.syspath_prepend(str(tmp_path))
    train_file = _jsonl(
        tmp_path / "train.jsonl", [{"problem": f"say {i}", "answer": f"t{i}"} for i in range(3)]
    )
    eval_file = _jsonl(
        tmp_path / "eval.jsonl", [{"problem": f"echo {i}", "answer": f"eval{i}"} for i in range(4)]
    )
    cfg = tiny_cfg(
        tmp_path / "run",
        **{
            "rewards.fn": "flaky_rewards:flaky",
            "rewards.timeout": 0.2,
            "data.path": str(train_file),
            "eval.path": str(eval_file),
            "train.steps": 2,
        },
    )
    start = time.monotonic()
    records = read_metrics(train(cfg))
    assert time.monotonic() - start < 120  # each hang cost its time limit, not 60 s
    kinds = log.read_text().split()
    steps = records[1:]
    assert [r["step"] for r in steps] == [1, 2]
    assert sum(r["reward/errors"] for r in steps) == kinds.count("raise") + kinds.count("nan")
    assert sum(r["reward/timeouts"] for r in steps) == kinds.count("sleep")
    assert all(kinds.count(k) for k in ("ok", "raise", "nan", "sleep")), kinds
    assert all(torch.isfinite(torch.tensor(r["loss/policy"])) for r in steps if "loss/policy" in r)


def _initial_weights():
    torch.manual_seed(0)
    return load_model("tiny-random", seed=0).state_dict()


def test_nan_loss_skips_each_optimizer_step_then_stops_with_the_last_good_weights(
    tmp_path, monkeypatch
):
    from dapo_rl.train import update

    real = update.aggregate
    monkeypatch.setattr(update, "aggregate", lambda *a, **k: real(*a, **k) * float("nan"))
    cfg = tiny_cfg(tmp_path / "run", **{"train.max_skipped_steps": 3})
    with pytest.raises(DapoError, match="optimizer steps in a row were skipped") as e:
        train(cfg)
    message = str(e.value)
    assert "train.max_skipped_steps=3" in message and "\n" not in message
    records = read_metrics(tmp_path / "run")
    # two groups -> two optimizer steps a training step, each skipped: 2, then 4 >= 3
    assert [r["step"] for r in records] == [0, 1, 2]
    assert [r["grad/skipped_steps"] for r in records[1:]] == [2, 2]
    ckpt = tmp_path / "run/checkpoints/step_000002"
    assert str(ckpt) in message and checkpoint.problem(ckpt) is None
    from safetensors.torch import load_file

    saved = load_file(ckpt / "model/model.safetensors")
    initial = _initial_weights()
    assert all(torch.equal(saved[k], initial[k]) for k in saved)  # never moved


def test_huge_learning_rate_diverges_into_a_clear_error(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", **{"train.lr": 1e30, "train.max_skipped_steps": 2})
    with pytest.raises(DapoError, match="skipped for a non-finite loss or gradient"):
        train(cfg)
    records = read_metrics(tmp_path / "run")
    assert sum(r.get("grad/skipped_steps", 0) for r in records) >= 2


def test_skip_count_spans_steps_and_resets_after_a_good_optimizer_step():
    from types import SimpleNamespace

    state = SimpleNamespace(step=1, skipped_in_a_row=0)
    steps = [(2, 0), (1, 3), (0, 1), (2, 0), (3, 0)]  # (skipped, taken) per training step
    seen = []
    for skipped, taken in steps:
        loop._track_skips(state, {"grad/skipped_steps": skipped}, taken)
        seen.append(state.skipped_in_a_row)
    assert seen == [2, 1, 0, 2, 5]


# --- in process: a dataset smaller than one step's demand ---------------------------------


def test_dataset_smaller_than_a_step_wraps_epochs_and_keeps_every_group(tmp_path):
    one_row = _jsonl(tmp_path / "one.jsonl", [{"problem": "count to three", "answer": "3"}])
    cfg = tiny_cfg(tmp_path / "run", **{"data.path": str(one_row), "train.steps": 3})
    with pytest.warns(UserWarning, match="no eval.path"):
        run = train(cfg)
    steps = read_metrics(run)[1:]
    assert [r["ds/kept_groups"] for r in steps] == [2, 2, 2]
    generated = sum(round(r["ds/completions_per_kept_group"] * r["ds/kept_groups"]) for r in steps)
    t = torch.load(run / "checkpoints/step_000003/trainer.pt", weights_only=True)
    assert t["stream"]["position"] == generated // 4 >= 6  # one prompt per group, 6+ epochs


class _ParityEngine:
    """Groups by problem: 'mixed' problems give a right and a wrong completion, others none."""

    pad_id = 0

    def __init__(self):
        from dapo_rl.rollout import Rollout

        self.rollout, self.prompts = Rollout, []

    def generate(self, prompts, *, n, max_new_tokens, **_):
        self.prompts += prompts
        rows = len(prompts) * n
        ok = torch.tensor([("mixed" in p and j % 2 == 0) for p in prompts for j in range(n)])
        ids = torch.where(ok, 1, 2).long()[:, None]
        one = torch.ones(rows, 1, dtype=torch.long)
        return self.rollout(one, one, ids, one, -one.float(), one[:, 0], one[:, 0] == 0)


class _Tok:
    chat_template = None

    def batch_decode(self, seqs, skip_special_tokens=True):
        return ["right" if int(s[0]) == 1 else "wrong" for s in seqs]


def test_refill_across_epochs_keeps_the_groups_of_earlier_rounds():
    from types import SimpleNamespace

    from dapo_rl.rewards import Verdict

    cfg = build(
        overrides={
            "rollout.group_size": 4,
            "rollout.prompts_per_step": 5,
            "rollout.max_new_tokens": 8,
            "algo.overlong_buffer": 4,
            "algo.max_gen_rounds": 20,
            "algo.oversample": False,  # each round asks for exactly the missing groups
        }
    )
    data = [Example("mixed a", "x", "0"), Example("hard", "x", "1"), Example("mixed b", "x", "2")]
    state = SimpleNamespace(
        cfg=cfg,
        stream=PromptStream(data, seed=0),
        tokenizer=_Tok(),
        engine=_ParityEngine(),
        verifier=lambda text, ref: Verdict(1.0 if text == "right" else -1.0, text == "right"),
        generator=None,
        picker=PromptPicker(PickerSettings.from_config(cfg), seed=0),
    )
    col = collect(state)
    assert state.stream.epoch >= 1  # the 3-row set ran out during the refill
    assert col.stats.rounds > 1
    assert len(col.batch) == 5 * 4  # every accepted group is in the batch
    assert col.acc.view(5, 4).tolist() == [[1, 0, 1, 0]] * 5
    handed_out = state.engine.prompts
    assert len(handed_out) == state.stream.position
    # exactly five informative prompts were ever handed out: none was lost and refetched
    assert sum("mixed" in p for p in handed_out) == col.stats.kept_groups == 5


# --- bad run directories ------------------------------------------------------------------


def test_resume_with_an_unreadable_saved_config_is_one_clear_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(DapoError, match="cannot read the saved config") as e:
        train(tiny_cfg(run, resume=True))
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # nothing else written


def test_resume_wins_over_overwrite_and_keeps_the_run(tmp_path):
    run = train(tiny_cfg(tmp_path / "run", **{"train.steps": 1}))
    before = read_metrics(run)
    train(tiny_cfg(run, **{"train.steps": 2, "resume": True, "run.overwrite": True}))
    after = read_metrics(run)
    assert after[:2] == before and [r["step"] for r in after] == [0, 1, 2]


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_exit_status_and_one_line_for_a_stopped_run(monkeypatch, capsys, tmp_path, sig, status):
    from dapo_rl import cli

    def stopped(cfg):
        raise Interrupted(sig, f"stopped by {signal.Signals(sig).name} after step 1; resume ...")

    monkeypatch.setattr(loop, "train", stopped)
    monkeypatch.setattr(cli, "_quiet_libraries", lambda: None)
    assert cli.main(["train", "model.name=tiny-random", f"run.dir={tmp_path / 'run'}"]) == status
    err = capsys.readouterr().err
    assert err.splitlines() == [f"stopped by {signal.Signals(sig).name} after step 1; resume ..."]
