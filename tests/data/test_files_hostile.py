"""Hostile dataset files: never opened when not regular, bounded in size and line length,
and JSON nested past the parser's limit is one error line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dapo_rl.data import readers
from dapo_rl.data.files import load_examples, source_format
from dapo_rl.errors import DapoError

ROW = '{"question": "1+1?", "answer": "#### 2"}\n'


def test_a_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes
    with pytest.raises(DapoError, match=r"not a regular file \(a FIFO, device or socket\)"):
        load_examples(fifo)
    with pytest.raises(DapoError, match="not a regular file"):
        source_format(fifo)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_link_to_dev_zero_is_refused(tmp_path):
    link = tmp_path / "data.jsonl"
    link.symlink_to("/dev/zero")  # read_text would never end
    with pytest.raises(DapoError, match="not a regular file"):
        load_examples(link)


def test_a_file_over_the_size_cap_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "data.jsonl"
    path.write_text(ROW * 10)
    monkeypatch.setattr(readers, "MAX_FILE_BYTES", len(ROW) * 10 - 1)
    with pytest.raises(DapoError, match="data.jsonl: larger than"):
        load_examples(path)


def test_a_line_over_the_cap_is_refused_without_holding_it(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_LINE_CHARS", 100)
    path = tmp_path / "data.jsonl"
    path.write_text(ROW + '{"question": "' + "x" * 1000 + '", "answer": "1"}\n')
    with pytest.raises(DapoError, match=r"data.jsonl:2: line longer than"):
        load_examples(path)
    path.write_text(ROW * 3)  # lines under the cap still load
    assert len(load_examples(path)) == 3


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_deeply_nested_json_is_one_error_line(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DapoError, match="JSON nested too deeply") as e:
        load_examples(path)
    assert "\n" not in str(e.value)


def test_a_bad_byte_deep_in_a_jsonl_file_names_the_file(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(ROW.encode() * 2 + b"\xff\xfe\n")
    with pytest.raises(DapoError, match="cannot read .*data.jsonl"):
        load_examples(path)
