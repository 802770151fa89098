"""Loading a model larger than one rank's memory: built empty, then filled tensor by tensor.

``empty_model`` builds the model's structure with its parameters on the ``meta`` device (no
memory; buffers such as rotary frequencies are real). The caller may then shard it (FSDP2
``fully_shard`` is applied by ``dist``; this module never shards). ``load_into`` allocates
what this rank holds (its shards, or whole tensors) and fills it one parameter at a time:
rank 0 reads the tensor from the checkpoint's safetensors files (memory-mapped), and the
other ranks receive it: a sharded parameter is scattered from rank 0 (``distribute_tensor``),
a whole one broadcast. No rank ever holds more than its shards plus one whole tensor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as tdist

from dapo_rl import dist
from dapo_rl.errors import DapoError


def empty_model(config, dtype: torch.dtype = torch.float32):
    """The model of ``config`` with every parameter on the meta device (tied weights tied)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()
    return model


def safetensors_reader(folder: str | Path) -> Callable[[str], torch.Tensor]:
    """name -> tensor from a model folder's ``model.safetensors`` or its sharded index."""
    from safetensors import safe_open

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        files = json.loads(index.read_text())["weight_map"]
    elif (folder / "model.safetensors").exists():
        with safe_open(folder / "model.safetensors", "pt") as f:
            files = dict.fromkeys(f.keys(), "model.safetensors")
    else:
        raise DapoError(f"model folder {folder} holds no safetensors weights")

    def read(name: str) -> torch.Tensor:
        if name not in files:
            raise DapoError(f"model folder {folder} has no tensor {name}")
        with safe_open(folder / files[name], "pt") as f:
            return f.get_tensor(name)

    return read


def load_into(model, read: Callable[[str], torch.Tensor] | None, device) -> None:
    """Allocate ``model``'s parameters (an ``empty_model``, sharded or not) on ``device`` and
    fill them from ``read`` (name -> whole tensor), which only rank 0 needs (others: None).

    Collective in a distributed run: every rank calls it with the same model structure.
    """
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)  # keeps tied weights one object
    try:
        model.to_empty(device=device)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
        for name, p in model.named_parameters():  # a tied parameter once
            _fill(p, read(name) if dist.is_main() else None, name)


def _fill(p: torch.nn.Parameter, full: torch.Tensor | None, name: str) -> None:
    """Copy rank 0's whole tensor ``full`` into ``p`` on every rank (its shard, if sharded)."""
    shape = tuple(p.shape)  # the whole (global) shape, also for an FSDP2 shard
    if full is not None and tuple(full.shape) != shape:
        raise DapoError(f"tensor {name}: checkpoint shape {tuple(full.shape)}, model {shape}")
    device = p.to_local().device if dist.is_sharded(p) else p.device
    if full is None:
        full = torch.empty(shape, dtype=p.dtype, device=device)
    full = full.to(device, p.dtype)
    if dist.is_sharded(p):
        from torch.distributed.tensor import distribute_tensor

        p.copy_(distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=0))
        return
    if dist.initialized():
        tdist.broadcast(full, src=0)
    p.copy_(full)
