"""A user's own data: CSV, datasets save_to_disk folders, prompt_template, chat context,
the row's columns on each example, and the auto template."""

from __future__ import annotations

import json

import pytest

from dapo_rl.data.arithmetic import Arithmetic
from dapo_rl.data.files import MAX_COLUMN_CHARS, load_examples
from dapo_rl.data.templates import build_prompt, render, resolve
from dapo_rl.errors import DapoError

SVAMP = [
    {"ID": "s1", "Body": "Ann has 3 apples.", "Question": "She eats 1. How many left?",
     "Answer": 2.0, "Type": "Subtraction"},
    {"ID": "s2", "Body": "Bo has 2 cats.", "Question": "He gets 2 more. How many?",
     "Answer": 4.0, "Type": "Addition"},
]  # fmt: skip


def test_prompt_template_joins_columns_and_rows_keep_their_columns():
    examples = load_examples(SVAMP, prompt_template="{Body} {Question}", answer_field="Answer")
    assert examples[0].problem == "Ann has 3 apples. She eats 1. How many left?"
    assert [e.answer for e in examples] == ["2", "4"]  # 2.0 -> "2"
    assert examples[1].columns["Type"] == "Addition" and examples[1].columns["Answer"] == 4.0
    assert examples[0].template == "plain"  # the user wrote the prompt: no instruction added
    # literal braces, dotted paths
    rows = [{"q": {"a": "x"}, "ans": "1"}]
    ex = load_examples(rows, prompt_template="{{{q.a}}} ?", answer_field="ans")[0]
    assert ex.problem == "{x} ?"


@pytest.mark.parametrize(
    "template, message",
    [
        ("{Body} {Nope}", "field 'Nope' missing"),
        ("{0.__class__}", "field '0.__class__' missing"),  # a dotted path, never an attribute
        ("{Body!r}", "write each column as {name}"),
        ("{Body:>9}", "write each column as {name}"),
        ("{Body[0]}", "write each column as {name}"),
        ("{}", "write each column as {name}"),
        ("{Body", "data.prompt_template"),
    ],
)
def test_prompt_template_refuses_anything_but_column_names(template, message):
    with pytest.raises(DapoError, match=message.replace("{", r"\{").replace("[", r"\[")):
        load_examples(SVAMP, prompt_template=template, answer_field="Answer")


def test_unknown_layout_error_names_the_keys_to_set():
    with pytest.raises(DapoError, match="data.prompt_template"):
        load_examples(SVAMP)


def test_chat_prompts_keep_system_and_earlier_turns():
    rows = [
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4"},  # after the question: dropped
            ],
            "gold": "4",
        }
    ]
    ex = load_examples(rows, prompt_field="messages", answer_field="gold")[0]
    assert ex.problem == "What is 2+2?"
    assert ex.context == (("system", "You are terse."), ("user", "Hi"), ("assistant", "Hello."))
    assert render(ex.problem, "plain", ex.context) == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    # a worked example goes after the system prompt and before the earlier turns
    roles = [m["role"] for m in render(ex.problem, "dapo_oneshot", ex.context)]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]


def test_auto_template_per_source():
    arith = Arithmetic().example(0, 0)
    assert resolve("auto", arith) == "dapo_oneshot"
    gsm = load_examples([{"question": "1+1?", "answer": "#### 2"}])[0]
    assert resolve("auto", gsm) == "dapo"  # a math file: the instruction, no arithmetic example
    assert resolve("boxed", arith) == "boxed"  # an explicit choice wins
    with pytest.raises(DapoError, match="unknown template 'x'"):
        resolve("x", gsm)

    class Plain:
        chat_template = None

    assert build_prompt(Plain(), gsm, "auto").startswith("Solve the following math problem")
    assert build_prompt(Plain(), arith, "auto").startswith("What is 12 + 7?")


def test_columns_are_bounded():
    big = "x" * (MAX_COLUMN_CHARS + 1)
    rows = [{"question": "q", "answer": "#### 1", "blob": big, "small": [1, 2]}]
    ex = load_examples(rows)[0]
    assert "blob" not in ex.columns and ex.columns["small"] == [1, 2]


def test_csv(tmp_path):
    path = tmp_path / "svamp.csv"
    path.write_text(
        '\ufeffID,Body,Question,Answer\ns1,"Ann has 3, then 1.",How many?,4\ns2,B,Q,5\n',
        encoding="utf-8",
    )
    examples = load_examples(path, prompt_template="{Body} {Question}", answer_field="Answer")
    assert [(e.problem, e.answer, e.id) for e in examples] == [
        ("Ann has 3, then 1. How many?", "4", "0"),
        ("B Q", "5", "1"),
    ]
    assert examples[0].columns == {"ID": "s1", "Body": "Ann has 3, then 1.",
                                   "Question": "How many?", "Answer": "4"}  # fmt: skip
    path.write_text("question,answer\nq,#### 1,extra\n")
    with pytest.raises(DapoError, match=r"svamp.csv:2: more values than the header"):
        load_examples(path)


def _save_to_disk(folder, rows, files=1):
    """A folder as ``datasets.Dataset.save_to_disk`` writes it: state.json naming Arrow
    IPC stream files (the layout datasets 2.x-4.x uses)."""
    pa = pytest.importorskip("pyarrow", reason="pyarrow is needed for save_to_disk folders")
    folder.mkdir(parents=True)
    names = [f"data-{i:05d}-of-{files:05d}.arrow" for i in range(files)]
    for i, name in enumerate(names):
        table = pa.Table.from_pylist(rows[i::files])
        with pa.OSFile(str(folder / name), "wb") as sink:
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
    state = {"_data_files": [{"filename": n} for n in names], "_split": None}
    (folder / "state.json").write_text(json.dumps(state))
    (folder / "dataset_info.json").write_text("{}")


def test_save_to_disk_folder(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(4)]
    _save_to_disk(tmp_path / "ds" / "train", rows, files=2)
    examples = load_examples(tmp_path / "ds" / "train")
    assert sorted(e.answer for e in examples) == ["0", "1", "2", "3"]
    # a DatasetDict folder: the error names its splits
    (tmp_path / "ds" / "dataset_dict.json").write_text('{"splits": ["train"]}')
    with pytest.raises(DapoError, match=r"several splits \(train\)"):
        load_examples(tmp_path / "ds")
    # a file name in state.json that leaves the folder is refused
    (tmp_path / "ds" / "train" / "state.json").write_text(
        json.dumps({"_data_files": [{"filename": "../secret.arrow"}]})
    )
    with pytest.raises(DapoError, match="leaves the folder"):
        load_examples(tmp_path / "ds" / "train")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DapoError, match="without state.json"):
        load_examples(tmp_path / "plain")


def test_save_to_disk_folder_written_by_datasets(tmp_path):
    datasets = pytest.importorskip(
        "datasets", reason="the datasets package (pip install datasets) writes the real folder"
    )
    rows = [{"Body": "B", "Question": "Q", "Answer": 3}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "svamp"))
    ex = load_examples(
        tmp_path / "svamp", prompt_template="{Body} {Question}", answer_field="Answer"
    )
    assert (ex[0].problem, ex[0].answer) == ("B Q", "3")
