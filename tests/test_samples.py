"""Sample completions: the records, their size bound, the log and its TensorBoard text."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from dapo_rl.data.files import Example
from dapo_rl.metrics import TensorBoardSink
from dapo_rl.rewards import Verdict
from dapo_rl.samples import MAX_CHARS, SamplesLog, markdown, read_samples, sample_records


def _ro(lengths, truncated):
    return SimpleNamespace(lengths=torch.tensor(lengths), truncated=torch.tensor(truncated))


def test_records_take_each_groups_first_completion():
    examples = [Example("p0", "1", "0"), Example("p1", "2", "1"), Example("p2", "3", "2")]
    texts = ["a", "b", "c", "d", "e", "f"]  # 3 groups of 2
    rewards = [(0.5, 1.0), (0, 0), (-1.0, 0.0), (0, 0), (1.0, 1.0), (0, 0)]
    ro = _ro([3, 4, 5, 6, 7, 8], [False, False, True, False, False, False])
    out = sample_records(examples, texts, rewards, ro, count=2, group=2)
    assert out == [
        {"prompt": "p0", "completion": "a", "reward": 0.5, "acc": 1.0, "length": 3,
         "truncated": False},
        {"prompt": "p1", "completion": "c", "reward": -1.0, "acc": 0.0, "length": 5,
         "truncated": True},
    ]  # fmt: skip
    # verdicts (evaluation) give score and acc; long texts are cut
    long = "x" * (MAX_CHARS + 10)
    out = sample_records([Example(long, "1", "0")], [long], [Verdict(1.0, True)], _ro([2], [0]), 4)
    assert out[0]["reward"] == 1.0 and out[0]["acc"] == 1.0
    assert len(out[0]["completion"]) == MAX_CHARS + len(" [...]")


def test_log_appends_jsonl_and_tensorboard_text(tmp_path):
    class Writer:
        def __init__(self):
            self.texts = []

        def add_text(self, tag, text, step):
            self.texts.append((tag, text, step))

        def flush(self):
            pass

    writer = Writer()
    tensorboard = TensorBoardSink.__new__(TensorBoardSink)  # its writer replaced by the fake
    tensorboard.writer = writer
    log = SamplesLog(tmp_path, [tensorboard, object()])  # a sink without samples is passed over
    record = {"prompt": "p", "completion": "c", "reward": 1.0, "acc": 1.0, "length": 2,
              "truncated": True, "set": "gsm8k"}  # fmt: skip
    log.write(3, "eval", [record])
    log.write(4, "train", [])  # nothing to write: no line, no text
    assert read_samples(tmp_path) == [{"step": 3, "kind": "eval", **record}]
    assert [(tag, step) for tag, _, step in writer.texts] == [("samples/eval", 3)]
    assert "truncated" in writer.texts[0][1] and "(gsm8k)" in writer.texts[0][1]
    assert markdown([record]).startswith("**reward 1, acc 1, 2 tokens, truncated** (gsm8k)")
    assert read_samples(tmp_path / "none") == []
