"""Checkpoints: model (Hugging Face format) plus everything needed to resume exactly.

``<run.dir>/checkpoints/step_NNNNNN/`` holds
- ``model/``: ``save_pretrained`` weights and tokenizer;
- ``trainer.pt``: optimizer, scheduler, every RNG (the sampling generator, torch's global
  and CUDA RNGs, Python's ``random``, NumPy's), the stream position, the dynamic-sampling
  pass-through rate, the prompt picker's state (carried groups, prompt history, explore rates
  and its RNG: ``train/picker.py``), the run of skipped optimizer steps, the step;
- ``manifest.json``, written last: the step, the config hash and each other file's size
  and sha256.

Choices:
- A checkpoint is written under a temporary name and renamed into place, so a kill
  mid-write never leaves a directory that looks complete.
- Loading tries the newest checkpoint first. One without a manifest, with a file missing,
  truncated or failing its checksum, or written by a different config is refused with a
  warning naming it and the reason, and the next older one is tried. Checkpoints that
  exist but are all unusable are an error, never a silent fresh start.
- The config hash covers the values that differ from the defaults, leaving out the keys a
  resume may change (``RESUMABLE_KEYS``), so adding a config key with a default does not
  orphan old checkpoints.
- Only the newest ``keep`` checkpoints are kept; after a resume that fell back past a bad
  checkpoint, the newer (abandoned) ones are removed when the next one is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import random
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from dapo_rl import dist, models
from dapo_rl.config import Config, flatten, to_dict
from dapo_rl.errors import DapoError
from dapo_rl.rollout import Rollout
from dapo_rl.train import dcp

_PREFIX = "step_"
_TMP = ".tmp_"
MANIFEST = "manifest.json"
_DCP = "dcp"  # the sharded weights and optimizer state of an FSDP run
_ROLLOUT = "__rollout__"  # marks a Rollout stored as a dict of tensors

# Keys a resumed run may set differently from the run it continues.
RESUMABLE_KEYS = frozenset(
    {
        "train.steps",
        "train.max_skipped_steps",
        "resume",
        "run.progress",
        "run.overwrite",
        "run.dir",
        "run.checkpoint_every",
        "run.keep_checkpoints",
        "eval.every",
        "run.threads",
    }
)


def config_hash(cfg: Config) -> str:
    """sha256 of the config's non-default values, the resumable keys left out."""
    defaults = flatten(to_dict(Config()))
    values = {
        k: v
        for k, v in flatten(to_dict(cfg)).items()
        if k not in RESUMABLE_KEYS and defaults.get(k, object()) != v
    }
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _step_of(path: Path) -> int:
    return int(path.name[len(_PREFIX) :])


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Every ``step_NNNNNN`` directory, oldest first (whether or not it is intact)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX) :].isdigit()
    ]
    return sorted(found, key=_step_of)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_manifest(ckpt: Path, step: int, cfg_hash: str) -> None:
    files = {}
    for p in sorted(ckpt.rglob("*")):
        if p.is_file():
            _fsync(p)
            files[p.relative_to(ckpt).as_posix()] = {
                "size": p.stat().st_size,
                "sha256": _sha256(p),
            }
    manifest = {"step": step, "config_hash": cfg_hash, "files": files}
    (ckpt / MANIFEST).write_text(json.dumps(manifest, indent=1))
    _fsync(ckpt / MANIFEST)


def problem(ckpt: Path, cfg_hash: str | None = None) -> str | None:
    """Why the checkpoint at ``ckpt`` cannot be used, or None when it is intact."""
    try:
        manifest = json.loads((ckpt / MANIFEST).read_text())
        files, step = dict(manifest["files"]), int(manifest["step"])
    except FileNotFoundError:
        return f"no {MANIFEST} (written partially or by an older version)"
    except (OSError, ValueError, KeyError, TypeError):
        return f"unreadable {MANIFEST}"
    if step != _step_of(ckpt):
        return f"{MANIFEST} names step {step}"
    if "trainer.pt" not in files or not any(n.startswith("model/") for n in files):
        return f"{MANIFEST} lists no trainer.pt or model files"
    if cfg_hash is not None and manifest.get("config_hash") != cfg_hash:
        return "written by a run with a different config"
    extra = sorted(
        p.relative_to(ckpt).as_posix()
        for p in ckpt.rglob("*")
        if not p.is_dir() and p.relative_to(ckpt).as_posix() not in {*files, MANIFEST}
    )
    if extra:
        return f"holds {extra[0]}, which {MANIFEST} does not list"
    for name, meta in files.items():
        why = _file_problem(ckpt / name, meta)
        if why:
            return f"{name} {why}"
    return None


def _file_problem(path: Path, meta) -> str | None:
    if not isinstance(meta, dict) or not {"size", "sha256"} <= set(meta):
        return "has no size and checksum in the manifest"
    if not path.is_file():
        return "is missing"
    size = path.stat().st_size
    if size != meta["size"]:
        return f"has {size} bytes, not {meta['size']} (truncated or rewritten)"
    if _sha256(path) != meta["sha256"]:
        return "fails its sha256 checksum"
    return None


def _rng_states() -> dict:
    out = {"torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_rng"] = torch.cuda.get_rng_state_all()
    try:
        import numpy

        kind, keys, pos, has_gauss, gauss = numpy.random.get_state()
        out["numpy_rng"] = (kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, gauss)
    except ImportError:
        pass
    return out


def _set_rng_states(t: dict) -> None:
    torch.set_rng_state(t["torch_rng"])
    random.setstate(t["python_rng"])
    if "cuda_rng" in t and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(t["cuda_rng"][: torch.cuda.device_count()])
    if "numpy_rng" in t:
        import numpy

        kind, keys, pos, has_gauss, gauss = t["numpy_rng"]
        numpy.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, gauss))


def _plain(x):
    """``x`` with every Rollout (carried groups) as a dict of tensors: ``torch.load``
    with ``weights_only=True`` builds only tensors and plain containers."""
    if isinstance(x, Rollout):
        return {_ROLLOUT: {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}}
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_plain(v) for v in x)
    return x


def _unplain(x):
    if isinstance(x, dict):
        if set(x) == {_ROLLOUT}:
            return Rollout(**x[_ROLLOUT])
        return {k: _unplain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_unplain(v) for v in x)
    return x


def _load_trainer_state(path: Path) -> dict:
    """``trainer.pt`` without running code: a planted pickle is refused, never executed."""
    try:
        return _unplain(torch.load(path, weights_only=True, map_location="cpu"))
    except pickle.UnpicklingError as e:
        why = str(e).splitlines()[0]
        raise DapoError(
            f"{path.name} holds objects other than tensors and plain data, which loading "
            f"would run as code ({why}); a manifest proves integrity, not authorship"
        ) from None


def _prune(root: Path, step: int, keep: int) -> None:
    dirs = checkpoint_dirs(root.parent)
    abandoned = [d for d in dirs if _step_of(d) > step]
    current = [d for d in dirs if _step_of(d) <= step]
    for old in abandoned + current[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _sharded(state) -> bool:
    """Whether the checkpoint is written with DCP: an FSDP run, at any world size."""
    return bool(state.cfg.train.fsdp) or dist.model_is_sharded(state.model)


def _trainer_state(state, sharded: bool) -> dict:
    return {
        "step": state.step,
        "format": "dcp" if sharded else "hf",
        "optimizer": None if sharded else state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "generator": state.generator.get_state(),
        **_rng_states(),
        "stream": state.stream.state_dict(),
        "pass_rate": state.picker.pass_rate,
        "picker": state.picker.state_dict(),
        "skipped_in_a_row": state.skipped_in_a_row,
    }


def save(run_dir: Path, state, *, keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``state.step``; returns its directory.

    Every rank calls it. With FSDP each rank writes its own shards of the weights and the
    optimizer state (``dcp/``, keyed by parameter name: any world size can load them) and
    rank 0 the model's config and tokenizer (``model/``); without, rank 0 writes the
    model with ``save_pretrained``. Rank 0 writes the rest, then the manifest.
    """
    sharded = _sharded(state)
    dist.reshard(state.model)
    root = Path(run_dir) / "checkpoints"
    final = root / f"{_PREFIX}{state.step:06d}"
    tmp = root / f"{_TMP}{final.name}"
    if dist.is_main():
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{_TMP}*"):  # left by a run killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
        (tmp / "model").mkdir(parents=True)
    if sharded:
        dist.barrier()  # the directory exists before any rank writes into it
        dcp.save(tmp / _DCP, state.model, state.optimizer)  # collective
    if not dist.is_main():
        return final
    if sharded:
        state.model.config.save_pretrained(tmp / "model")
        state.model.generation_config.save_pretrained(tmp / "model")
    else:
        state.model.save_pretrained(tmp / "model")
    state.tokenizer.save_pretrained(tmp / "model")
    torch.save(_plain(_trainer_state(state, sharded)), tmp / "trainer.pt")
    _write_manifest(tmp, state.step, config_hash(state.cfg))  # last: marks it complete
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    _fsync(root)
    _prune(root, state.step, keep)
    return final


def listed_files(ckpt: Path) -> list[str]:
    """The files the manifest of an intact checkpoint lists (relative paths)."""
    return sorted(json.loads((ckpt / MANIFEST).read_text())["files"])


def _restore(path: Path, state) -> None:
    t = _load_trainer_state(path / "trainer.pt")
    listed = listed_files(path)
    if t.get("format") == "dcp":
        dcp.load(path / _DCP, state.model, state.optimizer)  # collective; reshards
    elif _sharded(state):
        raise DapoError(f"checkpoint {path} was written without train.fsdp; resume it without")
    else:  # tied embeddings are saved once and a LoRA model saves only its adapter;
        # anything else missing is an error
        from safetensors.torch import load_file

        weights = {}
        for name in listed:  # exactly the manifest's files, never a glob
            if name.startswith("model/") and name.endswith(".safetensors"):
                weights.update(load_file(path / name))
        missing, unexpected = models.load_weights(state.model, weights)
        if missing or unexpected:
            raise DapoError(
                f"checkpoint {path} does not match the model: {missing[:3]} {unexpected[:3]}"
            )
        state.optimizer.load_state_dict(t["optimizer"])
    state.scheduler.load_state_dict(t["scheduler"])
    state.generator.set_state(t["generator"])
    _set_rng_states(t)
    state.stream.load_state_dict(t["stream"])
    state.picker.pass_rate = float(t["pass_rate"])
    picker = t.get("picker", t.get("sampler"))  # "sampler": written before the rename
    if picker is not None:  # written since carry-over and prompt history exist
        state.picker.load_state_dict(picker)
    state.skipped_in_a_row = int(t["skipped_in_a_row"])
    state.step = int(t["step"])


def _warn(text: str) -> None:
    warnings.warn(text, stacklevel=3)


def _unusable(path: Path, cfg_hash: str) -> str | None:
    """Why ``path`` cannot be resumed from: ``problem``, or state that will not parse safely
    (a pickle that would build objects, DCP metadata naming a foreign class)."""
    why = problem(path, cfg_hash)
    if why is not None:
        return why
    try:
        _load_trainer_state(path / "trainer.pt")
        if (path / _DCP).is_dir():
            dcp.model_tensors(path / _DCP)
    except DapoError as e:
        return str(e)
    return None


def _choose(run_dir: Path, cfg_hash: str) -> tuple[str | None, list[tuple[str, str]]]:
    refused = []
    for path in reversed(checkpoint_dirs(run_dir)):
        why = _unusable(path, cfg_hash)
        if why is None:
            return str(path), refused
        refused.append((str(path), why))
    return None, refused


def load_latest(run_dir: Path, state, *, log: Callable[[str], None] = _warn) -> int:
    """Restore the newest intact checkpoint into ``state``; returns its step (0 if none).

    Each unusable checkpoint is reported through ``log`` and skipped for an older one.
    Rank 0 checks the checkpoints (every file's checksum) and every rank loads the one it
    chose: its own shards under FSDP.
    """
    choice = _choose(run_dir, config_hash(state.cfg)) if dist.is_main() else None
    chosen, refused = dist.all_gather_object(choice)[0]
    for path, why in refused if dist.is_main() else ():
        log(f"refusing checkpoint {path}: {why}; trying the previous one")
    if chosen is not None:
        _restore(Path(chosen), state)
        return state.step
    if refused:
        names = "; ".join(f"{Path(p).name} ({why})" for p, why in refused)
        raise DapoError(
            f"no usable checkpoint in {Path(run_dir) / 'checkpoints'}: {names}; "
            "pass run.overwrite=true to start over"
        )
    return 0
