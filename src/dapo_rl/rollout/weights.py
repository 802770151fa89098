"""The trainer's weights as an inference engine loads them: streamed, one tensor at a time.

``stream_weights(model)`` yields ``(name, tensor)`` pairs under the plain Hugging Face
parameter names (what ``from_pretrained`` reads and vLLM's ``load_weights`` maps), each
tensor whole and in the engine's dtype. It never holds a state dict:

- a parameter sharded by FSDP2 (a ``DTensor``) is gathered with ``full_tensor()`` when its
  turn comes, so every rank must drain the stream in the same order (they walk the same
  module tree); a plain tensor is used as it is;
- a LoRA layer (PEFT, vanilla LoRA on a linear layer) is merged when its turn comes:
  ``W + (B @ A) * s`` with ``s = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with rsLoRA,
  arXiv 2312.03732), PEFT's own arithmetic, so the result equals ``merge_and_unload``.
  Only that layer's delta and merged weight exist, and the model is not modified;
- names drop what wrappers add (FSDP1, activation checkpointing, ``torch.compile``,
  PEFT's ``base_layer`` and ``modules_to_save``); the adapter's own tensors are not sent;
- a parameter shared by two modules (a tied LM head) is sent once, under its first name,
  as ``named_parameters`` does; the engine ties it again as its model config says.

The consumer must drop each tensor before taking the next (vLLM's ``load_weights`` copies
it into its own parameter and moves on); peak extra memory is then one whole parameter in
the engine's dtype plus, for a LoRA layer, its float32 delta.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import torch

from dapo_rl.errors import DapoError

# name pieces that wrappers insert and Hugging Face checkpoints do not have
_WRAPPER_PIECES = re.compile(
    r"(?:_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod|modules_to_save\.[^.]+)\."
)


def hf_name(name: str) -> str | None:
    """The Hugging Face name of a trainer parameter, or None for one the engine lacks.

    ``base_model.model.x.q_proj.base_layer.weight`` -> ``x.q_proj.weight``; adapter tensors
    (``lora_A``/``lora_B``/...) and PEFT's ``original_module`` copies -> None.
    """
    name = _WRAPPER_PIECES.sub("", name).removeprefix("base_model.model.")
    pieces = name.split(".")
    if "original_module" in pieces or any(p.startswith("lora_") for p in pieces):
        return None
    return name.replace(".base_layer.", ".")


def lora_scale(r: int, alpha: float, *, use_rslora: bool) -> float:
    """PEFT's LoRA scaling: alpha / r, or alpha / sqrt(r) with rsLoRA (arXiv 2312.03732)."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def full(t: torch.Tensor) -> torch.Tensor:
    """``t`` whole: an FSDP2 ``DTensor`` gathered from every rank (collective), else ``t``."""
    from torch.distributed.tensor import DTensor

    if not isinstance(t, DTensor):
        return t.detach()
    if t.device.type != t.device_mesh.device_type:  # CPU-offloaded shards: gather on the mesh
        t = t.to(t.device_mesh.device_type)
    return t.detach().full_tensor()


def _is_lora(module) -> bool:
    return hasattr(module, "lora_A") and hasattr(module, "base_layer")


def _lora_factors(module, name: str, peft_config: dict) -> list[tuple[str, float]]:
    """The active adapters of one LoRA layer with their scales; refuses what cannot merge."""
    from peft.tuners.lora import Linear

    active = [a for a in module.active_adapters if a in module.lora_A]
    if not isinstance(module, Linear) or getattr(module, "lora_variant", {}).keys() & set(active):
        raise DapoError(
            f"cannot stream the LoRA layer {name} ({type(module).__name__}) to the sampler: "
            "only vanilla LoRA on linear layers (no DoRA, embeddings or convolutions) merges"
        )
    if any(getattr(module, "lora_bias", {}).get(a) for a in active):
        raise DapoError(f"cannot stream the LoRA layer {name}: lora_bias is not supported")
    return [
        (a, lora_scale(module.r[a], module.lora_alpha[a], use_rslora=peft_config[a].use_rslora))
        for a in active
    ]


def _merged(module, name: str, peft_config: dict, dtype: torch.dtype) -> torch.Tensor:
    """One LoRA layer's weight with its adapters merged, whole, in ``dtype``."""
    merged = full(module.base_layer.weight)
    for adapter, scale in _lora_factors(module, name, peft_config):
        a = full(module.lora_A[adapter].weight).to(merged.dtype)
        b = full(module.lora_B[adapter].weight).to(merged.dtype)
        delta = b @ a
        if module.fan_in_fan_out:
            delta = delta.T
        merged = delta.mul_(scale).add_(merged)  # PEFT: W += (B @ A) * scaling, bit for bit
    return merged.to(dtype)


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return full(t).to(dtype)


@torch.no_grad()
def _walk(module, prefix: str, seen: set[int], peft_config: dict, dtype) -> Iterator:
    if _is_lora(module):
        name = hf_name(prefix + "weight")
        seen.add(id(module.base_layer.weight))
        yield name, _merged(module, name, peft_config, dtype)
        bias = module.base_layer.bias
        if bias is not None and id(bias) not in seen:
            seen.add(id(bias))
            yield hf_name(prefix + "bias"), _cast(bias, dtype)
        return
    for local, p in module.named_parameters(recurse=False):
        name = hf_name(prefix + local)
        if name is None or id(p) in seen:
            continue
        seen.add(id(p))
        yield name, _cast(p, dtype)
    for child_name, child in module.named_children():
        if child_name == "original_module":  # PEFT keeps the untrained copy beside the trained
            continue
        yield from _walk(child, f"{prefix}{child_name}.", seen, peft_config, dtype)


def stream_weights(
    model, dtype: torch.dtype = torch.bfloat16
) -> Iterator[tuple[str, torch.Tensor]]:
    """(Hugging Face name, whole tensor in ``dtype``) for every parameter, one at a time.

    ``model`` is a transformers model, a PEFT model around one, or either sharded with
    FSDP2. Each tensor is built only when the consumer asks for it.
    """
    peft_config = getattr(model, "peft_config", {})
    inner = model.get_base_model() if peft_config else model
    return _walk(inner, "", set(), peft_config, dtype)
