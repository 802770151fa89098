"""Dataset files: every supported layout read into ``Example(problem, answer, id)`` rows.

Sources: ``.jsonl``, ``.json`` (a list of objects or ``{"data": [...]}``), ``.parquet`` (needs
pyarrow, imported only then) or an in-memory iterable of dicts, such as a HF
``datasets.Dataset`` (anything with ``.to_list()`` or that iterates dicts).

Layouts (``LAYOUTS``), auto-detected from the first row's fields when ``format`` is None:
- ``gsm8k``: question / answer, a worked solution ending ``#### 72`` -> "72";
- ``math500``: problem / answer (LaTeX), id from ``unique_id``;
- ``aime``, ``amc``: problem / answer; numeric answers become strings (27.0 -> "27");
- ``asdiv``: problem = body + " " + question, answer "9 (apples)" -> "9";
- ``dapo17k`` (verl layout): prompt = chat messages -> the user message content, kept as is
  even when it already holds the DAPO instructions; answer = ``reward_model.ground_truth``.
``prompt_field`` / ``answer_field`` (dotted paths allowed) replace the layout's fields; the
layout's answer cleaning still applies (it leaves an answer it does not recognise as is).
``source_format`` names the layout of a source's first row (``dapo eval`` picks a verifier by it).

Every bad input raises ``DapoError`` with one line naming the file, row or field. Hostile
files are bounded before they are read: only regular files are opened (a FIFO would block,
``/dev/zero`` never ends), a file may hold at most ``MAX_FILE_BYTES`` and a JSONL line at most
``MAX_LINE_CHARS`` (read with a limit, so a huge line is never held whole), and JSON nested
too deeply for the parser is an error line rather than a RecursionError.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dapo_rl.errors import DapoError


@dataclass(frozen=True)
class Example:
    """One problem with its reference answer."""

    problem: str  # the problem text shown to the model (before any prompt template)
    answer: str  # the reference answer passed to the verifier
    id: str  # stable id (row index if the file has none)


_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
MAX_FILE_BYTES = 4 << 30  # a dataset file larger than this is refused before reading it
MAX_LINE_CHARS = 16 << 20  # a JSONL row this long is not a problem with its answer


def _thousands(answer: str) -> str:
    return answer.replace(",", "") if _THOUSANDS.fullmatch(answer) else answer


def gsm8k_answer(answer: str) -> str:
    """The number after the last ``####`` of a worked solution ("1,080" -> "1080")."""
    return _thousands(answer.rsplit("####", 1)[-1].strip())


def asdiv_answer(answer: str) -> str:
    """A trailing unit in parentheses dropped: "9 (apples)" -> "9"; "Sara" stays."""
    return re.sub(r"\s*\([^()]*\)\s*$", "", answer).strip() or answer.strip()


@dataclass(frozen=True)
class Layout:
    """Where a format keeps its problem, answer and id, and how its answer is cleaned."""

    prompt: tuple[str, ...]  # fields joined with a space into the problem text
    answer: str
    ids: tuple[str, ...] = ()  # the first present one is the id, else the row index
    clean: Callable[[str], str] = str.strip


LAYOUTS = {
    "gsm8k": Layout(("question",), "answer", (), gsm8k_answer),
    "math500": Layout(("problem",), "answer", ("unique_id",)),
    "aime": Layout(("problem",), "answer", ("id",)),
    "amc": Layout(("problem",), "answer", ("id",)),
    "asdiv": Layout(("body", "question"), "answer", ("idx",), asdiv_answer),
    "dapo17k": Layout(("prompt",), "reward_model.ground_truth", ("extra_info.index",)),
}
_ALIASES = {"aime24": "aime", "amc23": "amc", "verl": "dapo17k"}
_MISSING = object()


def detect_format(row: Mapping) -> str | None:
    """The layout name matching ``row``'s fields, or None."""
    fields = set(row)
    if {"prompt", "reward_model"} <= fields:
        return "dapo17k"
    if {"body", "question", "answer"} <= fields:
        return "asdiv"
    if {"problem", "answer"} <= fields:
        return "math500" if "unique_id" in fields else "aime"
    if {"question", "answer"} <= fields:
        return "gsm8k"
    return None


def _field(row: Mapping, path: str) -> Any:
    """``row[path]``, following dots into nested objects; ``_MISSING`` when absent or null."""
    if path in row:
        value = row[path]
    else:
        value = row
        for key in path.split("."):
            if not isinstance(value, Mapping) or key not in value:
                return _MISSING
            value = value[key]
    return _MISSING if value is None else value


def _text(value: Any) -> str:
    """A field value as text: chat messages -> the user message, 27.0 -> "27"."""
    if hasattr(value, "tolist"):
        value = value.tolist()  # numpy arrays and scalars from pandas-backed datasets
    if isinstance(value, list) and len(value) == 1 and not isinstance(value[0], Mapping):
        value = value[0]
    if isinstance(value, list) and value and all(isinstance(m, Mapping) for m in value):
        users = [m for m in value if m.get("role") == "user"] or value
        value = users[-1].get("content", "")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value.strip() if isinstance(value, str) else str(value)


def _example(row: Mapping, index: int, where: str, layout: Layout, name: str) -> Example:
    def need(path: str) -> Any:
        value = _field(row, path)
        if value is _MISSING:
            present = ", ".join(map(str, row)) or "none"
            raise DapoError(
                f"{where}: field '{path}' missing ({name} layout); fields present: {present}"
            )
        return value

    problem = " ".join(p for p in (_text(need(f)) for f in layout.prompt) if p)
    answer = layout.clean(_text(need(layout.answer)))
    if not problem or not answer:
        empty = "problem" if not problem else f"answer ('{layout.answer}')"
        raise DapoError(f"{where}: empty {empty}")
    ids = (_field(row, f) for f in layout.ids)
    found = next((v for v in ids if v is not _MISSING), _MISSING)
    return Example(problem, answer, str(index) if found is _MISSING else _text(found))


def _loads(text: str, where: str) -> Any:
    """``json.loads`` with nesting too deep for the parser as a DapoError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise DapoError(f"{where}: JSON nested too deeply") from None


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


def _file_rows(path: Path) -> Iterator[tuple[str, Any]]:
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".parquet"):
        raise DapoError(f"{path}: unsupported file type '{suffix}'; use .jsonl, .json or .parquet")
    if not path.exists():
        raise DapoError(f"dataset file not found: {path}")
    if path.is_dir():
        raise DapoError(f"dataset path is a directory, not a file: {path}")
    if not path.is_file():  # never opened: a FIFO blocks, a device never ends
        raise DapoError(f"dataset path is not a regular file (a FIFO, device or socket): {path}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DapoError(f"{path}: larger than {MAX_FILE_BYTES >> 30} GiB")
    if suffix == ".parquet":
        return _parquet(path)
    if suffix == ".jsonl":
        return _jsonl(path, _bounded_lines(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DapoError(f"cannot read {path}: {error}") from None
    return _json(path, text)


def _rows(source: Any) -> tuple[str, Iterator[tuple[str, Any]]]:
    """(name for messages, iterator of (location, row)) for a path or in-memory rows."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        return str(path), _file_rows(path)
    if hasattr(source, "to_list"):
        source = source.to_list()
    if isinstance(source, Mapping) and isinstance(source.get("data"), list):
        source = source["data"]
    if isinstance(source, Mapping) or not isinstance(source, Iterable):
        raise DapoError(
            f"dataset source must be a file path or an iterable of dicts, not {type(source)}"
        )
    return "in-memory rows", ((f"row {i}", row) for i, row in enumerate(source))


def _layout(format: str | None, first: Mapping, where: str, prompt_field, answer_field):
    """(layout name, Layout) from ``format`` or the first row, with field overrides applied."""
    if format is not None:
        name = _ALIASES.get(format.lower(), format.lower())
        if name not in LAYOUTS:
            raise DapoError(f"unknown dataset format '{format}': use one of {', '.join(LAYOUTS)}")
    elif prompt_field and answer_field:
        name = "custom"
    else:
        name = detect_format(first)
        if name is None:
            raise DapoError(
                f"{where}: cannot tell the dataset format from fields "
                f"{', '.join(map(str, first))}; set format ({', '.join(LAYOUTS)}) "
                "or prompt_field and answer_field"
            )
    layout = LAYOUTS.get(name, Layout((prompt_field,), answer_field, ("id", "idx", "unique_id")))
    return name, Layout(
        (prompt_field,) if prompt_field else layout.prompt,
        answer_field or layout.answer,
        layout.ids,
        layout.clean,
    )


def source_format(source: Any) -> str | None:
    """The layout ``load_examples`` would detect from ``source``'s first row, or None."""
    _, rows = _rows(source)
    first = next(rows, None)
    if first is None or not isinstance(first[1], Mapping):
        return None
    return detect_format(first[1])


def load_examples(
    source: Any,
    *,
    format: str | None = None,
    prompt_field: str | None = None,
    answer_field: str | None = None,
    limit: int | None = None,
) -> list[Example]:
    """Examples from a dataset file or in-memory rows; the first ``limit`` rows if given.

    >>> load_examples([{"question": "1+1?", "answer": "1+1=<<1+1=2>>2\\n#### 2"}])
    [Example(problem='1+1?', answer='2', id='0')]
    """
    if limit is not None and limit < 1:
        raise DapoError(f"limit must be at least 1, got {limit}")
    name, rows = _rows(source)
    examples: list[Example] = []
    layout = layout_name = None
    for index, (where, row) in enumerate(rows):
        if limit is not None and index >= limit:
            break
        if not isinstance(row, Mapping):
            raise DapoError(f"{where}: expected an object with fields, got {type(row).__name__}")
        if layout is None:
            layout_name, layout = _layout(format, row, where, prompt_field, answer_field)
        examples.append(_example(row, index, where, layout, layout_name))
    if not examples:
        raise DapoError(f"{name}: no rows to load")
    return examples
