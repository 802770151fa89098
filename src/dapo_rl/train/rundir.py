"""The run directory: claimed, locked and given the run's config before the first step.

``prepare`` runs after every input has been checked (``loop.build_state``), so nothing here
sees bad input except the directory itself:
- ``<run.dir>/train.lock`` holds a POSIX record lock (``fcntl.lockf``) for as long as the
  trainer lives, so a second trainer on the same directory is refused with one line. A
  record lock rather than ``flock``: it belongs to the trainer process alone, so the verifier
  workers forked from it never hold it, and a trainer killed with ``kill -9`` frees the
  directory at once for its resume. (On NFS, locks are only as good as the server's.)
- An existing different run is refused unless ``resume=true`` (the saved config must then
  differ only in ``checkpoint.RESUMABLE_KEYS``) or ``run.overwrite=true``.
- The resolved config is written atomically to ``<run.dir>/config.yaml``.
- A directory that cannot be written (read-only, a file in the way) is one DapoError line.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import yaml

from dapo_rl.config import Config, flatten, to_dict
from dapo_rl.errors import DapoError
from dapo_rl.train import checkpoint

LOCK_NAME = "train.lock"


def _check_resumable(saved: Path, cfg: Config) -> None:
    """Refuse to resume a run whose saved config differs in a key a resume may not change."""
    try:
        tree = yaml.safe_load(saved.read_text())
        old = flatten(tree)
    except (OSError, yaml.YAMLError, AttributeError):
        raise DapoError(
            f"cannot read the saved config {saved}; pass run.overwrite=true to start over"
        ) from None
    defaults = flatten(to_dict(Config()))  # keys added since the run was saved: defaults
    new = flatten(to_dict(cfg))
    changed = [
        k
        for k in new
        if old.get(k, defaults.get(k)) != new[k] and k not in checkpoint.RESUMABLE_KEYS
    ]
    if changed:
        raise DapoError(
            f"resume=true but the config differs from the saved run in {', '.join(changed)}"
        )


def write_atomic(path: Path, text: str) -> None:
    """``path`` holds ``text`` or its old content, never half of it (kill-safe)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _lock(run_dir: Path) -> int:
    """An open descriptor of ``run_dir/train.lock`` holding this process's exclusive lock."""
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # EAGAIN / EACCES: another process holds it
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DapoError(
            f"run directory {run_dir} is in use by another trainer (pid {holder}); wait for "
            "it to end or choose another run.dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def prepare(cfg: Config) -> tuple[Path, int]:
    """The run directory, locked and holding this run's config; (path, lock descriptor).

    The claim is checked before anything is written (a refused run leaves no lock file),
    then again under the lock, for a trainer that claimed the directory in between.
    """
    run_dir = Path(cfg.run.dir)
    try:
        _may_claim(run_dir, cfg)
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = _lock(run_dir)
    except OSError as e:  # read-only, not a directory, no space
        raise DapoError(f"cannot write to run directory {run_dir}: {e.strerror}") from None
    try:
        _claim(run_dir, cfg, replace=_may_claim(run_dir, cfg))
    except BaseException:
        os.close(lock)
        raise
    return run_dir, lock


def _may_claim(run_dir: Path, cfg: Config) -> bool:
    """Refuse (DapoError) a run that may not use ``run_dir``; whether it replaces one there."""
    saved = run_dir / "config.yaml"
    if saved.exists() and cfg.resume:
        _check_resumable(saved, cfg)
        return False
    if saved.exists() and not cfg.run.overwrite:
        raise DapoError(
            f"run directory {run_dir} already holds a run: pass resume=true to continue "
            "it or run.overwrite=true to replace it"
        )
    return cfg.run.overwrite


def _claim(run_dir: Path, cfg: Config, *, replace: bool) -> None:
    """Write this run's config into ``run_dir`` (after removing the run it replaces)."""
    try:
        for name in ("metrics.jsonl", "checkpoints", "config.yaml") if replace else ():
            path = run_dir / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(
                missing_ok=True
            )
        write_atomic(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    except OSError as e:
        raise DapoError(f"cannot write to run directory {run_dir}: {e.strerror}") from None
