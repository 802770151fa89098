"""Data parallelism: rank and world, reductions, and joining a ``torchrun`` process group.

Every function works without ``torch.distributed`` initialised: the process is rank 0 of a
world of 1 and each reduction returns its input unchanged, so single-process code needs no
branches.

The scheme (docs/scaling.md has the whole picture):
- the model is never wrapped in DistributedDataParallel: the update calls the decoder and
  the LM head directly (shared-prompt prefill), which DDP's forward hooks would not see.
  Instead each rank backpropagates a loss already divided by the *global* token (or
  sequence) count of the optimizer mini-batch, and ``sum_gradients`` sums the gradients
  over ranks before clipping. The sum of the ranks' partial gradients is exactly the
  gradient of the global mini-batch loss; no world-size factor appears anywhere;
- every rank keeps a full copy of the weights and the optimizer state, and all ranks apply
  the same summed gradient, so the weights stay identical and any rank's copy is the
  checkpoint;
- with ``train.fsdp`` the model is sharded over the ranks instead (FSDP2 ``fully_shard`` on
  every decoder layer and on the root: ``shard_model``): weights, gradients and AdamW state
  are split, and a module's weights are gathered only while it runs. The reduce-scatter
  sums the gradients (divide factor 1), the same sum as above. Checkpoints are sharded
  with ``torch.distributed.checkpoint`` (``train/dcp.py``) and load at any world size.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as tdist

_BUCKET = 1 << 25  # gradient elements per all-reduce (128 MiB of float32)


def initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if initialized() else 0


def world_size() -> int:
    return tdist.get_world_size() if initialized() else 1


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def init_from_env() -> torch.device:
    """Join the process group that ``torchrun`` describes; returns this rank's device.

    Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. With CUDA each rank
    takes GPU ``LOCAL_RANK`` and the NCCL backend; without, gloo on CPU. Without those
    variables (a plain ``python`` or ``dapo`` run) nothing is joined: the device is the
    first GPU if there is one, else the CPU.
    """
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank()) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not initialized():
        tdist.init_process_group(
            backend="nccl" if cuda else "gloo", device_id=device if cuda else None
        )
    return device


def _comm_device() -> torch.device:
    if initialized() and tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


_OPS = {"sum": "SUM", "mean": "SUM", "max": "MAX", "min": "MIN"}


def all_reduce(x, op: str = "sum"):
    """Reduce a Python number or a tensor over ranks: ``sum``, ``mean``, ``max`` or ``min``.

    Returns the same kind of value it was given (an int stays an int for sum/max/min; a
    tensor keeps its device and dtype, and the input is not modified).
    """
    if op not in _OPS:
        raise ValueError(f"unknown reduction {op!r}; valid: {', '.join(_OPS)}")
    if not initialized():
        return x
    if isinstance(x, torch.Tensor):
        t = x.detach().to(_comm_device(), torch.float64, copy=True)
    else:
        t = torch.tensor(float(x), dtype=torch.float64, device=_comm_device())
    tdist.all_reduce(t, op=getattr(tdist.ReduceOp, _OPS[op]))
    if op == "mean":
        t /= world_size()
    if isinstance(x, torch.Tensor):
        return t.to(x.device, x.dtype)
    if isinstance(x, int) and not isinstance(x, bool) and op != "mean":
        return round(float(t))
    return float(t)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (pickled; for small Python data)."""
    if not initialized():
        return [obj]
    out: list[Any] = [None] * world_size()
    tdist.all_gather_object(out, obj)  # safe: pickles between this run's own ranks
    return out


def pool(items: list) -> list:
    """Every rank's list concatenated in rank order."""
    return [x for part in all_gather_object(items) for x in part]


def barrier() -> None:
    if initialized():
        tdist.barrier()


def share_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share of n items; shares differ by at most one."""
    return n * rank // world, n * (rank + 1) // world


def round_up(n: int) -> int:
    """``n`` rounded up to a multiple of the world size, so every rank gets a share."""
    world = world_size()
    return -(-n // world) * world


def shard(items: Sequence) -> Sequence:
    """This rank's contiguous share of ``items`` (all of them in a world of 1)."""
    start, stop = share_bounds(len(items), rank(), world_size())
    return items[start:stop]


def rank_generator(generator: torch.Generator) -> torch.Generator:
    """A sampling generator for this rank, derived from the run's shared ``generator``.

    In a world of 1 it is ``generator`` itself. Otherwise every rank draws the same seed
    from ``generator`` (so its state stays identical on all ranks, and rank 0's checkpoint
    restores every rank) and offsets it by its rank, so ranks sample independent noise.
    """
    if world_size() == 1:
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.Generator().manual_seed(seed + rank())


def _buckets(tensors: list[torch.Tensor], limit: int) -> Iterable[list[torch.Tensor]]:
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        same = not bucket or (t.dtype, t.device) == (bucket[0].dtype, bucket[0].device)
        if bucket and (size + t.numel() > limit or not same):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel()
    if bucket:
        yield bucket


def is_sharded(t: torch.Tensor | None) -> bool:
    """Whether ``t`` is an FSDP2 shard (a DTensor) rather than a whole tensor."""
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _fsdp_modules(model) -> list:
    if not initialized():
        return []
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def model_is_sharded(model) -> bool:
    """Whether ``model`` is sharded with FSDP2 (``shard_model``)."""
    return bool(_fsdp_modules(model))


def reshard(model) -> None:
    """Free the gathered weights of every FSDP2 module, called after forward passes without
    a backward (sampling, evaluation, old log-probs). Each module already reshards after
    its forward (``reshard_after_forward``, the root included); this also frees what a
    forward cut short or an explicit ``unshard`` left gathered."""
    for m in _fsdp_modules(model):
        m.reshard()


def _root_call(self, fn):
    return fn()


def shard_model(model, *, bf16: bool = False, cpu_offload: bool = False) -> None:
    """FSDP2 as designed: ``fully_shard`` on every decoder layer and on the root (nothing in
    a world of 1), so embeddings, final norm and LM head (tied or not) are sharded too.

    - ``reshard_after_forward``: a layer's gathered weights are freed after its forward and
      gathered again for its backward;
    - ``bf16``: ``MixedPrecisionPolicy`` with bf16 parameters for compute and float32
      gradient reduction; the sharded parameters (the master weights AdamW updates) and
      the optimizer state stay float32;
    - ``cpu_offload``: ``CPUOffloadPolicy``: shards, gradients and the optimizer step live
      in host memory, gathered to the device per module;
    - the gradient divide factor is 1: the reduce-scatter *sums* the ranks' partial
      gradients, the project's convention (``sum_gradients``), with no world-size factor.

    The update calls the decoder and the LM head directly (shared-prompt prefill), not the
    root's ``forward``; ``through_root`` runs such calls under the root's FSDP hooks.
    """
    if not initialized():
        return
    import types

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import (
        CPUOffloadPolicy,
        MixedPrecisionPolicy,
        OffloadPolicy,
        fully_shard,
        register_fsdp_forward_method,
    )

    mesh = init_device_mesh(_comm_device().type, (world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    offload = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
    kwargs = dict(
        mesh=mesh,
        reshard_after_forward=True,
        mp_policy=policy if bf16 else MixedPrecisionPolicy(),
        offload_policy=offload if cpu_offload else OffloadPolicy(),
    )
    for layer in model.get_decoder().layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    for m in _fsdp_modules(model):  # a plain SUM (gloo has no pre-multiplied sum)
        m.set_gradient_divide_factor(1.0)
        m.set_force_sum_reduction_for_comms(True)
    model.fsdp_root_call = types.MethodType(_root_call, model)
    register_fsdp_forward_method(model, "fsdp_root_call")


def through_root(model, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` as a forward of ``model``'s FSDP2 root (or plainly, unsharded).

    The root gathers its weights before, and registers the hooks that reduce-scatter its
    gradients on the way back, only in a forward; a call into the decoder or the LM head
    that bypasses ``model.forward`` must run here. Its outputs must be tensors (or tuples).
    """
    if not hasattr(model, "fsdp_root_call"):
        return fn(*args, **kwargs)
    return model.fsdp_root_call(lambda: fn(*args, **kwargs))


def sum_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum every whole parameter's gradient over ranks, in place (a missing one is zero).

    Called once per optimizer step, after the micro-batch loop and before clipping. Every
    rank must pass the same parameters in the same order. FSDP2 shards are skipped: their
    reduce-scatter has already summed them (``shard_model``: divide factor 1).
    """
    if not initialized():
        return
    grads = []
    for p in params:
        if is_sharded(p):
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    for bucket in _buckets(grads, _BUCKET):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        tdist.all_reduce(flat)
        offset = 0
        for g in bucket:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale gradients to a total 2-norm of at most ``max_norm``; returns the norm before.

    ``torch.nn.utils`` does the work, also on FSDP2 gradients (DTensors): the norm of the
    shards is a partial sum over ranks, made whole (``full_tensor``) before the scaling.
    """
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if is_sharded(norm):
        norm = norm.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def agreed_signal(signum: int | None) -> int | None:
    """The stop signal any rank received (the largest number), on every rank; None if none.

    A SIGTERM that reaches one rank only must still stop all of them at the same step.
    """
    agreed = all_reduce(signum or 0, "max")
    return agreed or None


def merge_stats(parts: list[dict], *, max_keys: Iterable[str] = ()) -> dict:
    """Merge per-rank statistics: tensors concatenated in rank order, numbers summed,
    ``max_keys`` (wall times, rounds) taken as the maximum."""
    max_keys = set(max_keys)
    out: dict = {}
    for key in dict.fromkeys(k for part in parts for k in part):
        values = [part[key] for part in parts if key in part]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.cat(values)
        elif key in max_keys:
            out[key] = max(values)
        else:
            out[key] = sum(values)
    return out


def reduce_stats(stats: dict, *, max_keys: Iterable[str] = ()) -> dict:
    """``merge_stats`` over every rank's ``stats`` (one gather; unchanged in a world of 1)."""
    if not initialized():
        return stats
    return merge_stats(all_gather_object(stats), max_keys=max_keys)
