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

import hashlib
import json
import os
import random
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from dapo_rl import dist, models
from dapo_rl.config import Config, flatten, to_dict
from dapo_rl.errors import DapoError

_PREFIX = "step_"
_TMP = ".tmp_"
MANIFEST = "manifest.json"

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

        out["numpy_rng"] = numpy.random.get_state()
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

        numpy.random.set_state(t["numpy_rng"])


def _prune(root: Path, step: int, keep: int) -> None:
    dirs = checkpoint_dirs(root.parent)
    abandoned = [d for d in dirs if _step_of(d) > step]
    current = [d for d in dirs if _step_of(d) <= step]
    for old in abandoned + current[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def save(run_dir: Path, state, *, keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``state.step``; returns its directory.

    Every rank calls it; rank 0 writes. With FSDP the whole weights and optimizer state are
    gathered first (a collective), keyed by parameter name so any world size can load them.
    """
    sharded = dist.model_is_sharded(state.model)
    dist.reshard(state.model)
    weights, optim = dist.full_state(state.model, state.optimizer) if sharded else (None, None)
    root = Path(run_dir) / "checkpoints"
    final = root / f"{_PREFIX}{state.step:06d}"
    if not dist.is_main():
        return final
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f"{_TMP}*"):  # left by a run killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f"{_TMP}{final.name}"
    if sharded:  # the gathered whole tensors, in the layout save_pretrained writes
        from safetensors.torch import save_file

        (tmp / "model").mkdir(parents=True)
        state.model.config.save_pretrained(tmp / "model")
        tensors = {k: v.contiguous() for k, v in weights.items() if k != "lm_head.weight"}
        save_file(tensors, tmp / "model" / "model.safetensors", metadata={"format": "pt"})
    else:
        state.model.save_pretrained(tmp / "model")
    state.tokenizer.save_pretrained(tmp / "model")
    torch.save(
        {
            "step": state.step,
            "optimizer": optim if sharded else state.optimizer.state_dict(),
            "optimizer_by_name": sharded,
            "scheduler": state.scheduler.state_dict(),
            "generator": state.generator.get_state(),
            **_rng_states(),
            "stream": state.stream.state_dict(),
            "pass_rate": state.picker.pass_rate,
            "picker": state.picker.state_dict(),
            "skipped_in_a_row": state.skipped_in_a_row,
        },
        tmp / "trainer.pt",
    )
    _write_manifest(tmp, state.step, config_hash(state.cfg))  # last: marks it complete
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    _fsync(root)
    _prune(root, state.step, keep)
    return final


def _restore(path: Path, state) -> None:
    from safetensors.torch import load_file

    weights = {}
    for f in sorted((path / "model").glob("*.safetensors")):
        weights.update(load_file(f))
    t = torch.load(path / "trainer.pt", weights_only=False)
    by_name = bool(t.get("optimizer_by_name"))
    if dist.model_is_sharded(state.model) and not by_name:
        raise DapoError(f"checkpoint {path} was written without train.fsdp; resume it without")
    if by_name:  # written with FSDP: whole tensors keyed by name, for any world size
        dist.load_full_state(state.model, state.optimizer, weights, t["optimizer"])
    else:  # tied embeddings are saved once and a LoRA model saves only its adapter;
        # anything else missing is an error
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


def load_latest(run_dir: Path, state, *, log: Callable[[str], None] = _warn) -> int:
    """Restore the newest intact checkpoint into ``state``; returns its step (0 if none).

    Each unusable checkpoint is reported through ``log`` and skipped for an older one.
    """
    dirs = checkpoint_dirs(run_dir)
    cfg_hash = config_hash(state.cfg)
    refused = []
    for path in reversed(dirs):
        why = problem(path, cfg_hash)
        if why is None:
            _restore(path, state)
            return state.step
        refused.append(f"{path.name} ({why})")
        log(f"refusing checkpoint {path}: {why}; trying the previous one")
    if refused:
        raise DapoError(
            f"no usable checkpoint in {Path(run_dir) / 'checkpoints'}: {'; '.join(refused)}; "
            "pass run.overwrite=true to start over"
        )
    return 0
