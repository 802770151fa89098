"""Checkpoints: model (Hugging Face format) plus everything needed to resume exactly.

``<run.dir>/checkpoints/step_NNNNNN/`` holds ``model/`` (``save_pretrained``) and
``trainer.pt`` (optimizer, scheduler, the sampling generator, torch's global RNG, the
stream position, the step). A checkpoint is written under a temporary name and renamed
into place, so a kill mid-write never leaves a directory that looks complete. Only the
newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

_PREFIX = "step_"


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    done = [
        p
        for p in root.iterdir()
        if p.name.startswith(_PREFIX)
        and (p / "trainer.pt").exists()
        and p.name[len(_PREFIX) :].isdigit()
    ]
    return sorted(done, key=lambda p: int(p.name[len(_PREFIX) :]))


def save(run_dir: Path, state, *, keep: int) -> Path:
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{state.step:06d}"
    tmp = root / f".tmp_{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    state.model.save_pretrained(tmp / "model")
    state.tokenizer.save_pretrained(tmp / "model")
    torch.save(
        {
            "step": state.step,
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "generator": state.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "stream": state.stream.state_dict(),
            "pass_rate": state.pass_rate,
        },
        tmp / "trainer.pt",
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_latest(run_dir: Path, state) -> int:
    """Restore the newest checkpoint into ``state``; returns its step (0 when there is none)."""
    dirs = checkpoint_dirs(run_dir)
    if not dirs:
        return 0
    path = dirs[-1]
    from safetensors.torch import load_file

    weights = {}
    for f in sorted((path / "model").glob("*.safetensors")):
        weights.update(load_file(f))
    missing, unexpected = state.model.load_state_dict(weights, strict=False)
    # tied embeddings are saved once; anything else missing is an error
    missing = [k for k in missing if "lm_head" not in k]
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {path} does not match the model: {missing[:3]} {unexpected[:3]}"
        )
    t = torch.load(path / "trainer.pt", weights_only=False)
    state.optimizer.load_state_dict(t["optimizer"])
    state.scheduler.load_state_dict(t["scheduler"])
    state.generator.set_state(t["generator"])
    torch.set_rng_state(t["torch_rng"])
    state.stream.load_state_dict(t["stream"])
    state.pass_rate = float(t["pass_rate"])
    state.step = int(t["step"])
    return state.step
