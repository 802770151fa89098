"""Dataset files: every supported layout read into ``Example(problem, answer, id)`` rows.

Sources: ``.jsonl``, ``.json`` (a list of objects or ``{"data": [...]}``), ``.csv`` (a header
row, then one row per example; every value is text), ``.parquet`` (needs pyarrow, imported
only then), a ``datasets`` ``save_to_disk`` folder (``readers.data_folder``: pyarrow, no
``datasets`` import) or an in-memory iterable of dicts, such as a HF ``datasets.Dataset``
(anything with ``.to_list()`` or that iterates dicts).

Layouts (``LAYOUTS``), auto-detected from the first row's fields when ``format`` is None:
- ``gsm8k``: question / answer, a worked solution ending ``#### 72`` -> "72";
- ``math500``: problem / answer (LaTeX), id from ``unique_id``;
- ``aime``, ``amc``: problem / answer; numeric answers become strings (27.0 -> "27");
- ``asdiv``: problem = body + " " + question, answer "9 (apples)" -> "9";
- ``dapo17k`` (verl layout): prompt = chat messages -> the user message content, kept as is
  even when it already holds the DAPO instructions; answer = ``reward_model.ground_truth``.
``prompt_field`` / ``answer_field`` (dotted paths allowed) replace the layout's fields; the
layout's answer cleaning still applies (it leaves an answer it does not recognise as is).
``prompt_template`` builds the problem from any columns instead: ``"{Body} {Question}"``.
A prompt field holding chat messages gives its last user message as the problem and keeps
the messages before it (a system prompt, earlier turns) as ``Example.context``.
Every example carries its row's top-level columns (``Example.columns``, for reward
functions that take them), each kept only up to ``MAX_COLUMN_CHARS`` of JSON.
``source_format`` names the layout of a source's first row (``dapo eval`` picks a verifier by it).

Every bad input raises ``DapoError`` with one line naming the file, row or field. Hostile
files are bounded before they are read (``readers``): only regular files are opened (a FIFO
would block, ``/dev/zero`` never ends), a file may hold at most ``MAX_FILE_BYTES`` and a JSONL
line at most ``MAX_LINE_CHARS`` (read with a limit, so a huge line is never held whole), and
JSON nested too deeply for the parser is an error line rather than a RecursionError.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dapo_rl.data.readers import file_rows
from dapo_rl.errors import DapoError

MAX_COLUMN_CHARS = 20_000  # a longer column (as JSON) is left out of Example.columns
MAX_COLUMNS = 64  # columns kept per row, in the row's order


@dataclass(frozen=True)
class Example:
    """One problem with its reference answer."""

    problem: str  # the problem text shown to the model (before any prompt template)
    answer: str  # the reference answer passed to the verifier
    id: str  # stable id (row index if the file has none)
    # chat messages before the problem's user turn: ((role, content), ...), system first
    context: tuple[tuple[str, str], ...] = ()
    # the row's columns as plain JSON values, for rewards that ask for them by name
    columns: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # the template a data.template=auto run uses for this row (None: dapo)
    template: str | None = None


_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


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


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else value  # numpy from pandas/arrow


def _is_chat(value: Any) -> bool:
    value = _plain(value)
    return isinstance(value, list) and bool(value) and all(isinstance(m, Mapping) for m in value)


def _chat(value: list) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(last user message, the messages before it); messages after it are dropped."""
    last = max((i for i, m in enumerate(value) if m.get("role") == "user"), default=len(value) - 1)
    context = tuple((str(m.get("role", "user")), _text(m.get("content", ""))) for m in value[:last])
    return _text(value[last].get("content", "")), context


def _text(value: Any) -> str:
    """A field value as text: chat messages -> the user message, 27.0 -> "27"."""
    value = _plain(value)
    if isinstance(value, list) and len(value) == 1 and not isinstance(value[0], Mapping):
        value = value[0]
    if _is_chat(value):
        return _chat(value)[0]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value.strip() if isinstance(value, str) else str(value)


def _columns(row: Mapping) -> dict[str, Any]:
    """The row's top-level columns as JSON values, each at most ``MAX_COLUMN_CHARS`` long."""
    out = {}
    for key, value in list(row.items())[:MAX_COLUMNS]:
        try:
            text = json.dumps(_plain(value), default=str)
        except (TypeError, ValueError):
            continue
        if len(text) <= MAX_COLUMN_CHARS:
            out[str(key)] = json.loads(text)  # a private copy: plain dicts, lists, scalars
    return out


def fill_template(template: str, row: Mapping, need: Callable[[str], Any]) -> str:
    """``data.prompt_template`` with each ``{column}`` (dotted paths allowed) filled from
    ``row``; ``{{`` and ``}}`` are literal braces. Conversions, format specs and indexing are
    refused: the template names columns, nothing else."""
    out = []
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as error:
        raise DapoError(f"data.prompt_template {template!r}: {error}") from None
    for literal, name, spec, conversion in parts:
        out.append(literal)
        if name is None:
            continue
        if not name or spec or conversion or "[" in name:
            raise DapoError(
                f"data.prompt_template {template!r}: write each column as {{name}}, without "
                "conversions (!r), formats (:>9) or indexing ([0])"
            )
        out.append(_text(need(name)))
    return "".join(out).strip()


def _example(
    row: Mapping, index: int, where: str, layout: Layout, name: str, prompt_template: str | None
) -> Example:
    def need(path: str) -> Any:
        value = _field(row, path)
        if value is _MISSING:
            present = ", ".join(map(str, row)) or "none"
            raise DapoError(
                f"{where}: field '{path}' missing ({name} layout); fields present: {present}"
            )
        return value

    context: tuple[tuple[str, str], ...] = ()
    template = "plain" if prompt_template else None  # the user wrote the whole prompt
    if prompt_template:
        problem = fill_template(prompt_template, row, need)
    elif len(layout.prompt) == 1 and _is_chat(need(layout.prompt[0])):
        problem, context = _chat(_plain(need(layout.prompt[0])))
        template = "plain"  # chat prompts carry their own instructions
    else:
        problem = " ".join(p for p in (_text(need(f)) for f in layout.prompt) if p)
    answer = layout.clean(_text(need(layout.answer)))
    if not problem or not answer:
        empty = "problem" if not problem else f"answer ('{layout.answer}')"
        raise DapoError(f"{where}: empty {empty}")
    ids = (_field(row, f) for f in layout.ids)
    found = next((v for v in ids if v is not _MISSING), _MISSING)
    ident = str(index) if found is _MISSING else _text(found)
    return Example(problem, answer, ident, context, _columns(row), template)


def _rows(source: Any) -> tuple[str, Iterator[tuple[str, Any]]]:
    """(name for messages, iterator of (location, row)) for a path or in-memory rows."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        return str(path), file_rows(path)
    if hasattr(source, "to_list"):
        source = source.to_list()
    if isinstance(source, Mapping) and isinstance(source.get("data"), list):
        source = source["data"]
    if isinstance(source, Mapping) or not isinstance(source, Iterable):
        raise DapoError(
            f"dataset source must be a file path or an iterable of dicts, not {type(source)}"
        )
    return "in-memory rows", ((f"row {i}", row) for i, row in enumerate(source))


def _layout(
    format: str | None, first: Mapping, where: str, prompt_field, answer_field, prompt_template
):
    """(layout name, Layout) from ``format`` or the first row, with field overrides applied."""
    if format is not None:
        name = _ALIASES.get(format.lower(), format.lower())
        if name not in LAYOUTS:
            raise DapoError(f"unknown dataset format '{format}': use one of {', '.join(LAYOUTS)}")
    elif (prompt_field or prompt_template) and answer_field:
        name = "custom"
    else:
        name = detect_format(first)
        if name is None:
            raise DapoError(
                f"{where}: cannot tell the dataset format from fields "
                f"{', '.join(map(str, first))}; set data.format ({', '.join(LAYOUTS)}), or "
                "data.answer_field with data.prompt_field or data.prompt_template"
            )
    custom = Layout((prompt_field or "",), answer_field, ("id", "idx", "unique_id"))
    layout = LAYOUTS.get(name, custom)
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
    prompt_template: str | None = None,
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
            layout_name, layout = _layout(
                format, row, where, prompt_field, answer_field, prompt_template
            )
        examples.append(_example(row, index, where, layout, layout_name, prompt_template))
    if not examples:
        raise DapoError(f"{name}: no rows to load")
    return examples
