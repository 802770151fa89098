"""Sharded model and optimizer state with ``torch.distributed.checkpoint`` (DCP).

With ``train.fsdp`` every rank writes its own shards (``__<rank>_0.distcp``) and the
coordinator a ``.metadata`` index; on load each rank reads the pieces its shards need, so
a checkpoint written by N ranks loads at any world size, one process included (DCP
reshards). Keys are parameter names (``get_state_dict``), never positions.

DCP's ``FileSystemReader`` unpickles ``.metadata`` with plain ``pickle``: a planted file
would run code. ``SafeReader`` reads it with an unpickler that builds only DCP's own
metadata classes and a few torch value types, and refuses any other global; the tensor
data itself DCP reads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from pathlib import Path

import torch
from torch.distributed import checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import StorageMeta

from dapo_rl import dist
from dapo_rl.errors import DapoError

_DCP_NAME = "dcp"

# (module, name) the metadata of a model + optimizer state may name, and nothing else
_ALLOWED = {
    ("torch.distributed.checkpoint.metadata", n)
    for n in (
        "Metadata",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "MetadataIndex",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.distributed.checkpoint.planner", "LoadItemType"),
    ("torch.distributed.checkpoint.planner", "WriteItemType"),
    ("torch.serialization", "_get_layout"),  # a torch.layout from its name
    ("pathlib", "PosixPath"),  # the checkpoint id DCP records
    ("pathlib", "WindowsPath"),
    ("torch", "Size"),
    ("torch", "float32"),
    ("torch", "bfloat16"),
    ("torch", "float16"),
    ("torch", "float64"),
    ("torch", "int64"),
    ("torch", "int32"),
    ("torch", "uint8"),
    ("torch", "bool"),
    ("torch", "strided"),
    ("torch", "contiguous_format"),
    ("builtins", "set"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in DCP metadata")
        return super().find_class(module, name)  # safe: an allow-listed class only


class SafeReader(FileSystemReader):
    """``FileSystemReader`` whose ``.metadata`` can build no object outside ``_ALLOWED``."""

    def read_metadata(self, *args, **kwargs):
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as f:
            try:
                metadata = _MetadataUnpickler(f).load()
            except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as e:
                why = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise DapoError(f"{_DCP_NAME}/.metadata will not parse safely ({why})") from None
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


@contextlib.contextmanager
def _one_process_is_intended():
    """Silence DCP's warning that a world of 1 saves or loads in one process: it does."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _state(model, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, optimizer)  # sharded (DTensor) values under FSDP
    return {"model": msd, "optim": osd}


def save(path: Path, model, optimizer) -> None:
    """Write model and optimizer state under ``path`` (collective: every rank calls it)."""
    with _one_process_is_intended():
        dcp.save(_state(model, optimizer), checkpoint_id=str(path), no_dist=not dist.initialized())


def load(path: Path, model, optimizer) -> None:
    """Load ``save``'s state into ``model`` and ``optimizer``, sharded or whole, at any
    world size (collective)."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = _state(model, optimizer)
    reader = SafeReader(str(path))
    with _one_process_is_intended():
        dcp.load(
            state, checkpoint_id=str(path), storage_reader=reader, no_dist=not dist.initialized()
        )
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )


def model_tensors(path: Path) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """Each model tensor's name, shape and dtype, from the metadata alone."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = SafeReader(str(path)).read_metadata()
    return {
        key[len("model.") :]: (meta.size, meta.properties.dtype)
        for key, meta in metadata.state_dict_metadata.items()
        if key.startswith("model.") and isinstance(meta, TensorStorageMetadata)
    }


def read_tensor(path: Path, name: str, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """One whole model tensor, assembled from every rank's shards (one process)."""
    out = torch.empty(shape, dtype=dtype)
    with _one_process_is_intended():
        dcp.load({"model": {name: out}}, storage_reader=SafeReader(str(path)), no_dist=True)
    return out
