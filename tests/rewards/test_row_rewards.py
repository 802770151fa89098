"""Reward functions that see the row: ``prompt`` and columns by name, ``**row``, the current
folder on the import path, and the worker's time limit still applying to them."""

from __future__ import annotations

import pickle
import sys
import textwrap

import pytest

from dapo_rl.data.files import load_examples
from dapo_rl.errors import DapoError
from dapo_rl.rewards import RowReference, check_columns, get_verifier, references, score_all

ROWS = [
    {"question": "Add 2 and 3.", "answer": "#### 5", "unit": "apples", "tests": ["5"]},
    {"question": "Add 1 and 1.", "answer": "#### 2", "unit": "pears", "tests": ["2"]},
]

MODULE = """
import time

def two(completion, reference):
    return completion.strip() == reference

def by_name(completion, reference, *, prompt, unit):
    # full marks only when the completion names the row's unit and the prompt was seen
    return (float(unit in completion and prompt.startswith("Add")), reference in completion)

def everything(completion, reference, **row):
    return float(sorted(row) == ["answer", "prompt", "question", "tests", "unit"])

def slow(completion, reference, *, unit):
    time.sleep(30)
    return 1.0

def wants_missing(completion, reference, *, colour):
    return 1.0
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch, request):
    """A reward module in the current folder, importable only through that folder."""
    name = f"my_reward_{request.node.name.split('[')[0]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    return name


def test_row_reference_is_the_answer_string_and_pickles_with_its_row():
    examples = load_examples(ROWS)
    refs = references(examples, 2)
    assert refs == ["5", "5", "2", "2"]  # built-in verifiers see the plain answer
    back = pickle.loads(pickle.dumps(refs[2]))
    assert isinstance(back, RowReference) and back == "2"
    assert back.prompt == "Add 1 and 1." and back.columns["unit"] == "pears"


def test_functions_get_prompt_and_columns_by_name(user_module):
    examples = load_examples(ROWS)
    two = get_verifier(f"{user_module}:two")
    by_name = get_verifier(f"{user_module}:by_name")
    everything = get_verifier(f"{user_module}:everything")
    refs = references(examples)
    verdicts, faults = score_all(two, ["5", "3"], refs, timeout=5)
    assert [v.acc for v in verdicts] == [True, False]  # the two-argument form keeps working
    verdicts, faults = score_all(by_name, ["5 apples", "2 apples"], refs, timeout=5)
    assert [(v.score, v.acc) for v in verdicts] == [(1.0, True), (0.0, True)]
    verdicts, _ = score_all(everything, ["x", "y"], refs, timeout=5)
    assert [v.score for v in verdicts] == [1.0, 1.0]
    assert faults == {"timeout": 0, "error": 0, "nonfinite": 0}


def test_time_limit_holds_for_row_functions(user_module):
    slow = get_verifier(f"{user_module}:slow")
    verdicts, faults = score_all(slow, ["5"], references(load_examples(ROWS[:1])), timeout=0.5)
    assert verdicts[0].status == "timeout" and faults["timeout"] == 1


def test_a_missing_column_is_refused_before_the_run(user_module):
    examples = load_examples(ROWS)
    wants = get_verifier(f"{user_module}:wants_missing")
    with pytest.raises(DapoError, match="takes column colour.*columns: question, answer"):
        check_columns(wants, examples, "data.jsonl")
    check_columns(get_verifier(f"{user_module}:by_name"), examples, "data.jsonl")  # present
    # called anyway (rows of a later file): a counted error, never a crash
    verdicts, faults = score_all(wants, ["5"], references(examples[:1]), timeout=5)
    assert verdicts[0].status == "error" and faults["error"] == 1
    # a weighted sum asks for what its terms ask for
    total = get_verifier(f"0.5*{user_module}:wants_missing+0.5*gsm8k")
    with pytest.raises(DapoError, match="colour"):
        check_columns(total, examples, "data.jsonl")


def test_import_error_names_the_folder_searched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(DapoError, match=f"no_such_reward_mod.*current folder {tmp_path}"):
        get_verifier("no_such_reward_mod:fn")
