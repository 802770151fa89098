"""The run directory: one trainer at a time, a read-only directory, a full disk mid-run."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_run import TINY_RUN, tiny_cfg

from dapo_rl.errors import DapoError
from dapo_rl.metrics import read_metrics
from dapo_rl.train import checkpoint, rundir
from dapo_rl.train.loop import train

HERE = Path(__file__).parent
SRC = str(Path(__file__).parents[2] / "src")
HOLD = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
    "os.write(fd, b'%d\\n' % os.getpid())\n"
    "print('locked', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture(autouse=True)
def _toy_rewards_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture
def held_lock(tmp_path):
    """Another process holding the lock of ``tmp_path / 'run'``, as a second trainer would."""
    (tmp_path / "run").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "run" / rundir.LOCK_NAME)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_trainer_on_the_directory_is_one_error_line(tmp_path, held_lock, capsys):
    from dapo_rl import cli

    args = [f"{k}={v}" for k, v in TINY_RUN.items()] + [f"run.dir={tmp_path / 'run'}"]
    assert cli.main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"error: run directory {tmp_path / 'run'} is in use by another trainer "
        f"(pid {held_lock.pid}); wait for it to end or choose another run.dir"
    ]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [rundir.LOCK_NAME]


def test_the_lock_is_free_once_its_holder_is_killed(tmp_path, held_lock):
    cfg = tiny_cfg(tmp_path / "run")
    with pytest.raises(DapoError, match="in use by another trainer"):
        rundir.prepare(cfg)
    held_lock.kill()  # kill -9: no cleanup runs
    held_lock.wait()
    run_dir, lock = rundir.prepare(cfg)
    os.close(lock)
    assert (run_dir / "config.yaml").exists()


def test_the_lock_is_released_when_a_run_ends(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", **{"run.overwrite": True})
    _, lock = rundir.prepare(cfg)
    os.close(lock)
    _, lock = rundir.prepare(cfg)  # the same process again, or any other: free
    os.close(lock)


def _without_write_permission() -> list[str] | None:
    """A command prefix under which this user cannot write a mode-555 directory."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")  # root ignores modes unless it drops DAC override
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"] if setpriv else None


@pytest.mark.skipif(
    _without_write_permission() is None, reason="root without setpriv to drop DAC override"
)
def test_a_read_only_run_directory_is_one_error_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_dir.chmod(0o555)
    args = [f"{k}={v}" for k, v in TINY_RUN.items() if k != "rewards.fn"]
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    try:
        res = subprocess.run(
            [*_without_write_permission(), sys.executable, "-m", "dapo_rl.cli", "train", *args]
            + [f"run.dir={run_dir}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    finally:
        run_dir.chmod(0o755)
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines() == [
        f"error: cannot write to run directory {run_dir}: Permission denied"
    ]
    assert list(run_dir.iterdir()) == []


def test_a_full_disk_mid_save_leaves_a_tmp_checkpoint_that_resume_passes_over(
    tmp_path, monkeypatch
):
    overrides = {"train.steps": 3, "run.checkpoint_every": 1}
    real_save = checkpoint.torch.save

    def full_at_step_2(obj, path, *args, **kwargs):
        if obj.get("step") == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_at_step_2)
    with pytest.raises(DapoError) as e:
        train(tiny_cfg(tmp_path / "run", **overrides))
    assert str(e.value).startswith("run stopped: ") and "No space left on device" in str(e.value)
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [".tmp_step_000002", "step_000001"]

    monkeypatch.setattr(checkpoint.torch, "save", real_save)  # space again
    run = train(tiny_cfg(tmp_path / "run", **overrides, resume=True))
    assert [r["step"] for r in read_metrics(run)] == [0, 1, 2, 3]
    assert not list(ckpts.glob(".tmp_*"))
