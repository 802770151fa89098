"""Dataset loading: every layout from a small fixture, overrides, bad input, the real sets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dapo_rl.data.files import Example, detect_format, load_examples
from dapo_rl.errors import DapoError

FIXTURES = Path(__file__).parents[1] / "fixtures"
SHARED_DATA = Path(__file__).parents[2].parent / "shared" / "data"

DAPO_ROWS = [
    {
        "data_source": "math_dapo",
        "prompt": [{"content": "Solve it. Answer: $Answer\n\nWhat is $3+4$?", "role": "user"}],
        "ability": "MATH",
        "reward_model": {"ground_truth": "7", "style": "rule-based"},
        "extra_info": {"index": "q-7"},
    },
    {
        "data_source": "math_dapo",
        "prompt": [
            {"content": "Be brief.", "role": "system"},
            {"content": "What is $2^{10}$?", "role": "user"},
        ],
        "ability": "MATH",
        "reward_model": {"ground_truth": "1024", "style": "rule-based"},
        "extra_info": {"index": "q-1024"},
    },
]


@pytest.mark.parametrize(
    "name, layout, expected",
    [
        (
            "gsm8k_small.jsonl",
            "gsm8k",
            [("72", "0"), ("1080", "1"), ("-2", "2")],
        ),
        (
            "math500_small.jsonl",
            "math500",
            [
                ("\\left( 3, \\frac{\\pi}{2} \\right)", "test/precalculus/807.json"),
                ("\\text{Evelyn}", "test/algebra/2427.json"),
            ],
        ),
        ("aime_small.jsonl", "aime", [("204", "60"), ("025", "61")]),
        ("amc_small.jsonl", "aime", [("27", "0"), ("2.5", "1")]),
        ("asdiv_small.jsonl", "asdiv", [("9", "0"), ("Sara", "1"), ("14", "2")]),
        ("dapo17k_small.json", "dapo17k", [("7", "a1b2"), ("1024", "c3d4")]),
        ("wrapped_small.json", "aime", [("2", "p1")]),
    ],
)
def test_fixture_layouts_are_detected_and_read(name, layout, expected):
    path = FIXTURES / name
    first = json.loads(path.read_text().splitlines()[0]) if name.endswith(".jsonl") else None
    if first is not None:
        assert detect_format(first) == layout
    examples = load_examples(path)
    assert [(e.answer, e.id) for e in examples] == expected
    assert all(isinstance(e, Example) and e.problem for e in examples)


def test_named_format_matches_auto_detection():
    for name, fmt in [("amc_small.jsonl", "amc"), ("aime_small.jsonl", "aime24")]:
        assert load_examples(FIXTURES / name, format=fmt) == load_examples(FIXTURES / name)


def test_problem_text_per_layout():
    gsm8k = load_examples(FIXTURES / "gsm8k_small.jsonl")[0]
    assert gsm8k.problem.startswith("Natalia sold clips") and "####" not in gsm8k.problem
    asdiv = load_examples(FIXTURES / "asdiv_small.jsonl")[1]
    assert asdiv.problem == "Sara has 5 books and John has 3. Who has more books?"
    dapo = load_examples(FIXTURES / "dapo17k_small.json")
    assert dapo[0].problem.startswith("Solve the following math problem step by step.")
    assert dapo[0].problem.endswith('after "Answer:".')  # DAPO instructions kept as they are
    assert dapo[1].problem == "What is $2^{10}$?"  # the user message, not the system one


def test_in_memory_rows_and_dataset_like_objects():
    class FakeDataset:  # what a HF datasets.Dataset offers
        def to_list(self):
            return DAPO_ROWS

    # chat-message prompts carry their own instructions: the auto template is plain for them
    expected = [
        Example("Solve it. Answer: $Answer\n\nWhat is $3+4$?", "7", "q-7", template="plain")
    ]
    assert load_examples(DAPO_ROWS, limit=1) == expected
    assert load_examples(FakeDataset(), limit=1) == expected
    assert load_examples(iter(DAPO_ROWS), limit=1) == expected
    assert load_examples({"data": DAPO_ROWS}, limit=1) == expected


def test_field_overrides_with_dotted_paths():
    rows = [{"q": {"text": "What is 2+2?"}, "meta": {"gold": 4}, "id": "x"}]
    examples = load_examples(rows, prompt_field="q.text", answer_field="meta.gold")
    assert examples == [Example("What is 2+2?", "4", "x")]
    # an override keeps the layout's answer cleaning: gsm8k still reads "#### N"
    rows = [{"question": "q", "answer": "2", "solution": "so <<1+1=2>>2\n#### 2"}]
    assert load_examples(rows, format="gsm8k", answer_field="solution")[0].answer == "2"
    dapo = load_examples(DAPO_ROWS, answer_field="extra_info.index")
    assert [e.answer for e in dapo] == ["q-7", "q-1024"]


def test_limit_reads_the_first_rows():
    examples = load_examples(FIXTURES / "gsm8k_small.jsonl", limit=2)
    assert [e.id for e in examples] == ["0", "1"]


def test_parquet_in_verl_layout(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "dapo.parquet"
    pq.write_table(pa.Table.from_pylist(DAPO_ROWS), path)
    examples = load_examples(path)
    assert [(e.answer, e.id) for e in examples] == [("7", "q-7"), ("1024", "q-1024")]
    assert examples[1].problem == "What is $2^{10}$?"
    gsm = tmp_path / "gsm.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "q?", "answer": "x\n#### 5"}]), gsm)
    assert load_examples(gsm) == [Example("q?", "5", "0")]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(source, **kwargs) -> str:
    with pytest.raises(DapoError) as info:
        load_examples(source, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_malformed_json_line_names_file_and_line(tmp_path):
    good = json.dumps({"question": "q", "answer": "#### 1"})
    path = _write(tmp_path, "bad.jsonl", f"{good}\n\n{good}\n{{not json\n")
    message = _error(path)
    assert f"{path}:4" in message and "malformed JSON" in message


def test_missing_field_names_it_and_lists_fields_present(tmp_path):
    path = _write(tmp_path, "rows.jsonl", json.dumps({"problem": "p", "answer": "1"}) + "\n")
    message = _error(path, answer_field="solution")
    assert "'solution'" in message and "problem, answer" in message and f"{path}:1" in message
    rows = [{"question": "q", "answer": "#### 1"}, {"question": "q2"}]
    message = _error(rows)
    assert "row 1" in message and "'answer'" in message and "question" in message


@pytest.mark.parametrize(
    "name, text, pattern",
    [
        ("empty.jsonl", "", "no rows"),
        ("blank.jsonl", "\n\n", "no rows"),
        ("empty.json", "[]", "no rows"),
        ("scalar.json", "42", "expected a list"),
        ("notes.txt", "hello", "unsupported file type '.txt'"),
        ("list.jsonl", "[1, 2]\n", "expected an object"),
        ("fields.jsonl", '{"text": "t", "label": 1}\n', "cannot tell the dataset format"),
        ("blank_answer.jsonl", '{"problem": "p", "answer": " "}\n', "empty answer"),
    ],
)
def test_bad_files_raise_one_clear_line(tmp_path, name, text, pattern):
    assert re.search(re.escape(pattern), _error(_write(tmp_path, name, text)))


def test_missing_file_directory_and_bad_arguments(tmp_path):
    missing = tmp_path / "nope.jsonl"
    assert str(missing) in _error(missing)
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    assert "directory" in _error(folder)
    assert "unknown dataset format 'mmlu'" in _error(FIXTURES / "gsm8k_small.jsonl", format="mmlu")
    assert "limit" in _error(FIXTURES / "gsm8k_small.jsonl", limit=0)
    assert "iterable of dicts" in _error(42)
    assert "in-memory rows: no rows" in _error([])


def test_json_lines_in_a_json_file(tmp_path):
    rows = [{"problem": "p1", "answer": "1"}, {"problem": "p2", "answer": "2"}]
    path = _write(tmp_path, "lines.json", "\n".join(json.dumps(r) for r in rows))
    assert [e.answer for e in load_examples(path)] == ["1", "2"]


REAL_SETS = [
    ("gsm8k/train.jsonl", 7473),
    ("gsm8k/test.jsonl", 1319),
    ("math500/test.jsonl", 500),
    ("aime24/test.jsonl", 30),
    ("amc23/test.jsonl", 40),
    ("asdiv/test.jsonl", 2215),
]


@pytest.mark.parametrize("name, rows", REAL_SETS)
def test_real_benchmark_files(name, rows):
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present beside the checkout")
    examples = load_examples(SHARED_DATA / name)
    assert len(examples) == rows
    assert all(e.answer.strip() and e.problem.strip() for e in examples)
    assert len({e.id for e in examples}) == rows
    if name.startswith("gsm8k"):
        assert all(re.fullmatch(r"-?\d+(\.\d+)?", e.answer) for e in examples)
