"""Readers of dataset files: each yields (location for messages, row) pairs.

``.jsonl``, ``.json`` (a list, ``{"data": [...]}`` or one object per line), ``.csv`` (a header
row; values are text), ``.parquet`` and ``datasets`` ``save_to_disk`` folders (Arrow IPC
stream files listed in the folder's state.json; read with pyarrow, no ``datasets`` import,
and only the files state.json names inside the folder). Every bad input raises ``DapoError``
with one line naming the file and, where it can, the line or row.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from dapo_rl.errors import DapoError

MAX_FILE_BYTES = 4 << 30  # a dataset file larger than this is refused before reading it
MAX_LINE_CHARS = 16 << 20  # a JSONL row this long is not a problem with its answer


def _loads(text: str, where: str) -> Any:
    """``json.loads`` with nesting too deep for the parser as a DapoError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise DapoError(f"{where}: JSON nested too deeply") from None


def _bounded_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 file, each read with a limit of ``MAX_LINE_CHARS``."""
    try:
        with path.open(encoding="utf-8") as f:
            for number in itertools.count(1):
                line = f.readline(MAX_LINE_CHARS + 1)
                if not line:
                    return
                if len(line) > MAX_LINE_CHARS:
                    raise DapoError(
                        f"{path}:{number}: line longer than {MAX_LINE_CHARS >> 20} Mi characters"
                    )
                yield line
    except (OSError, UnicodeDecodeError) as error:
        raise DapoError(f"cannot read {path}: {error}") from None


def _jsonl(path: Path, lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", _loads(line, f"{path}:{number}")
        except json.JSONDecodeError as error:
            raise DapoError(
                f"{path}:{number}: malformed JSON line ({error.msg}, column {error.colno})"
            ) from None


def _json(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    try:
        data = _loads(text, str(path))
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":  # one object per line in a .json file
            return _jsonl(path, text.splitlines())
        raise DapoError(f"{path}:{error.lineno}: malformed JSON ({error.msg})") from None
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DapoError(f'{path}: expected a list of objects or {{"data": [...]}}')
    return ((f"{path} item {i}", row) for i, row in enumerate(data))


def _parquet(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DapoError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as error:  # pyarrow raises its own types for corrupt files
        raise DapoError(f"{path}: cannot read parquet ({error})") from None
    return ((f"{path} row {i}", row) for i, row in enumerate(rows))


def _csv(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:  # more values than the header has names
                raise DapoError(f"{where}: more values than the header's {len(reader.fieldnames)}")
            yield where, {k: v for k, v in row.items() if v is not None}
    except csv.Error as error:
        raise DapoError(f"{path}:{reader.line_num}: malformed CSV ({error})") from None


def _arrow_files(folder: Path) -> list[Path]:
    """The Arrow files a ``datasets`` ``save_to_disk`` folder lists in its state.json."""
    if (folder / "dataset_dict.json").exists():
        splits = sorted(p.name for p in folder.iterdir() if (p / "state.json").exists())
        raise DapoError(
            f"{folder} holds several splits ({', '.join(splits) or 'none'}): "
            f"give one split's folder, e.g. {folder / (splits[0] if splits else 'train')}"
        )
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except FileNotFoundError:
        raise DapoError(
            f"dataset path is a directory without state.json (not a datasets save_to_disk "
            f"folder): {folder}"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DapoError(f"{folder}/state.json: unreadable ({error!r})") from None
    files = []
    for name in names:  # only files inside the folder, as listed
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise DapoError(f"{folder}/state.json: data file name {name!r} leaves the folder")
        files.append(folder / name)
    return files


def data_folder(folder: Path) -> Iterator[tuple[str, Any]]:
    """Rows of a ``datasets.Dataset.save_to_disk`` folder (Arrow IPC stream files)."""
    try:
        import pyarrow as pa
    except ImportError:
        raise DapoError(f"reading {folder} needs pyarrow: pip install pyarrow") from None
    number = 0
    for path in _arrow_files(folder):
        try:
            with pa.memory_map(str(path)) as source:
                rows = pa.ipc.open_stream(source).read_all().to_pylist()
        except Exception as error:  # pyarrow raises its own types for corrupt files
            raise DapoError(f"{path}: cannot read Arrow data ({error})") from None
        for row in rows:
            yield f"{folder} row {number}", row
            number += 1


_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def file_rows(path: Path) -> Iterator[tuple[str, Any]]:
    if path.is_dir():
        return data_folder(path)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise DapoError(
            f"{path}: unsupported file type '{suffix}'; use .jsonl, .json, .csv, .parquet "
            "or a datasets save_to_disk folder"
        )
    if not path.exists():
        raise DapoError(f"dataset file not found: {path}")
    if not path.is_file():  # never opened: a FIFO blocks, a device never ends
        raise DapoError(f"dataset path is not a regular file (a FIFO, device or socket): {path}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DapoError(f"{path}: larger than {MAX_FILE_BYTES >> 30} GiB")
    if suffix == ".parquet":
        return _parquet(path)
    if suffix == ".jsonl":
        return _jsonl(path, _bounded_lines(path))
    try:
        text = path.read_text(encoding="utf-8-sig" if suffix == ".csv" else "utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DapoError(f"cannot read {path}: {error}") from None
    if suffix == ".csv":
        return _csv(path, text)
    return _json(path, text)
