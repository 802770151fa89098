"""``dapo export RUN_DIR --out DIR``: a checkpoint as a plain Hugging Face model folder.

The folder holds safetensors weights, ``config.json`` and the tokenizer, and loads with
``AutoModelForCausalLM.from_pretrained``. The checkpoint is the newest intact one (every
file's checksum against its manifest), or ``--step N``, which must be intact. Three kinds:
- sharded (``train.fsdp``, ``dcp/``): each tensor is read whole from every rank's shards,
  one at a time, and written into safetensors files of at most ``shard_bytes`` (with a
  ``model.safetensors.index.json`` when there are several): one file's tensors in memory
  at once, never the whole model. A tied LM head is written once, as the model saves it;
- LoRA (an adapter in ``model/``): the base model of the run's config, the adapter loaded
  and merged layer by layer in place (PEFT ``merge_and_unload``), then saved in files of
  at most ``shard_bytes``: the base model is in memory once, no merged copy besides;
- whole (``save_pretrained`` output): the listed files are copied.

Everything is written under a temporary name beside ``--out`` and renamed at the end, so
a failed export leaves nothing; an existing non-empty ``--out`` is refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dapo_rl.errors import DapoError
from dapo_rl.train import checkpoint, dcp

SHARD_BYTES = 2 << 30  # safetensors file size limit (2 GiB)
_ADAPTER = ("adapter_model.safetensors", "adapter_config.json", "README.md")


def pick(run_dir: Path, step: int | None = None) -> Path:
    """The checkpoint to export: ``step``'s, or the newest intact one; DapoError if none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DapoError(f"run directory {run_dir} does not exist")
    dirs = checkpoint.checkpoint_dirs(run_dir)
    if step is not None:
        dirs = [d for d in dirs if d.name == f"step_{step:06d}"]
        if not dirs:
            raise DapoError(f"{run_dir} has no checkpoint of step {step}")
    if not dirs:
        raise DapoError(f"{run_dir} holds no checkpoints")
    refused = []
    for path in reversed(dirs):
        why = checkpoint.problem(path)
        if why is None:
            return path
        refused.append(f"{path.name} ({why})")
    raise DapoError(f"no intact checkpoint in {run_dir}: {'; '.join(refused)}")


def _copy(ckpt: Path, names: list[str], dest: Path) -> None:
    for name in names:
        shutil.copyfile(ckpt / name, dest / Path(name).name)


def _groups(sizes: dict[str, int], limit: int) -> list[list[str]]:
    """Tensor names in order, cut into groups of at most ``limit`` bytes (one tensor may
    exceed it alone)."""
    groups: list[list[str]] = [[]]
    total = 0
    for name, size in sizes.items():
        if groups[-1] and total + size > limit:
            groups.append([])
            total = 0
        groups[-1].append(name)
        total += size
    return groups


def _write_shards(get, sizes: dict[str, int], dest: Path, limit: int) -> None:
    """Write tensors ``get(name)`` into safetensors files, one group in memory at a time."""
    from safetensors.torch import save_file

    groups = _groups(sizes, limit)
    n = len(groups)
    weight_map = {}
    for i, names in enumerate(groups, 1):
        file = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
        save_file({k: get(k).contiguous() for k in names}, dest / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file))
    if n > 1:
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
        (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _from_dcp(ckpt: Path, files: list[str], dest: Path, limit: int) -> None:
    _copy(ckpt, [n for n in files if n.startswith("model/")], dest)
    config = json.loads((dest / "config.json").read_text())
    tensors = dcp.model_tensors(ckpt / "dcp")
    if config.get("tie_word_embeddings", True):  # the head is the embeddings: saved once
        tensors.pop("lm_head.weight", None)
    sizes = {k: shape.numel() * dtype.itemsize for k, (shape, dtype) in tensors.items()}
    _write_shards(lambda k: dcp.read_tensor(ckpt / "dcp", k, *tensors[k]), sizes, dest, limit)


def _merge_lora(run_dir: Path, ckpt: Path, files: list[str], dest: Path, limit: int) -> None:
    from safetensors.torch import load_file

    from dapo_rl import config, models

    cfg = config.build(file_values=config.load_yaml(run_dir / "config.yaml"))  # DapoError
    m = cfg.model
    model = models.add_lora(
        models.load_model(m.name, seed=cfg.run.seed),
        rank=m.lora_rank,
        alpha=m.lora_alpha,
        targets=m.lora_targets,
    )
    weights = load_file(ckpt / "model" / "adapter_model.safetensors")
    missing, unexpected = models.load_weights(model, weights)
    if missing or unexpected:
        raise DapoError(f"the adapter of {ckpt} does not match the run's model")
    merged = model.merge_and_unload()  # layer by layer, in place
    merged.save_pretrained(dest, max_shard_size=limit)
    rest = [n for n in files if n.startswith("model/") and Path(n).name not in _ADAPTER]
    _copy(ckpt, [n for n in rest if not n.endswith(".safetensors")], dest)


def export(run_dir: Path, out: Path, *, step: int | None = None, shard_bytes=SHARD_BYTES) -> Path:
    """Write the checkpoint ``pick`` chooses as a Hugging Face model folder at ``out``."""
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DapoError(f"{out} exists and is not an empty directory")
    ckpt = pick(run_dir, step)
    files = checkpoint.listed_files(ckpt)
    tmp = out.with_name(f".{out.name}.tmp_export")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if any(n.startswith("dcp/") for n in files):
            _from_dcp(ckpt, files, tmp, shard_bytes)
        elif "model/adapter_config.json" in files:
            _merge_lora(run_dir, ckpt, files, tmp, shard_bytes)
        else:
            _copy(ckpt, [n for n in files if n.startswith("model/")], tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
