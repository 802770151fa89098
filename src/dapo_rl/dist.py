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
  checkpoint.
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
    tdist.all_gather_object(out, obj)
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


def sum_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over ranks, in place (a missing gradient is zero).

    Called once per optimizer step, after the micro-batch loop and before clipping. Every
    rank must pass the same parameters in the same order.
    """
    if not initialized():
        return
    grads = []
    for p in params:
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
