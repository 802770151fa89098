"""Metric sinks: record values, TensorBoard event files, the wandb calls, make_sinks."""

import json
import math
import sys
import types

import pytest

from dapo_rl.errors import DapoError
from dapo_rl.metrics import (
    JsonlSink,
    TensorBoardSink,
    WandbSink,
    as_float,
    make_sinks,
    numeric_items,
    read_metrics,
)

RECORDS = [
    {"step": 0, "eval/acc": 0.25},
    {"step": 1, "reward/mean": -0.5, "entropy/mean": 0.7, "note": "text", "loss/policy": "nan"},
    {"step": 2, "reward/mean": 0.5, "entropy/mean": 0.6, "grad/skipped_steps": 0},
]


def test_as_float_reads_numbers_and_non_finite_strings():
    assert as_float(3) == 3.0 and as_float(0.5) == 0.5 and as_float(True) == 1.0
    assert math.isnan(as_float("nan")) and as_float("-inf") == -math.inf
    assert as_float("text") is None and as_float(None) is None and as_float([1]) is None


def test_numeric_items_drops_step_and_text():
    items = numeric_items(RECORDS[1])
    assert set(items) == {"reward/mean", "entropy/mean", "loss/policy"}
    assert math.isnan(items["loss/policy"])


def test_jsonl_round_trip_keeps_non_finite_as_strings(tmp_path):
    sink = JsonlSink(tmp_path / "metrics.jsonl")
    sink.write({"step": 1, "loss/policy": float("nan"), "grad/norm": float("inf")})
    sink.close()
    assert read_metrics(tmp_path) == [{"step": 1, "loss/policy": "nan", "grad/norm": "inf"}]


def test_tensorboard_sink_writes_readable_scalars(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed: pip install tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (sink,) = make_sinks(["tensorboard"], tmp_path)
    for record in RECORDS:
        sink.write(record)
    sink.close()
    log_dir = tmp_path / "tensorboard"
    assert list(log_dir.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert tags == {"eval/acc", "reward/mean", "entropy/mean", "loss/policy", "grad/skipped_steps"}
    assert [(e.step, e.value) for e in acc.Scalars("reward/mean")] == [(1, -0.5), (2, 0.5)]
    assert [(e.step, e.value) for e in acc.Scalars("eval/acc")] == [(0, 0.25)]
    assert math.isnan(acc.Scalars("loss/policy")[0].value)


def test_tensorboard_missing_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(DapoError, match="pip install tensorboard"):
        TensorBoardSink(tmp_path)


class FakeRun:
    def __init__(self, **init):
        self.init, self.logged, self.finished = init, [], False

    def log(self, data, step):
        self.logged.append((step, data))

    def finish(self):
        self.finished = True


def fake_wandb(monkeypatch) -> list[FakeRun]:
    runs: list[FakeRun] = []

    def init(**kw):
        runs.append(FakeRun(**kw))
        return runs[-1]

    table = lambda columns, data: ("table", columns, data)  # noqa: E731
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init, Table=table))
    return runs


def test_wandb_sink_calls(monkeypatch, tmp_path):
    runs = fake_wandb(monkeypatch)
    run_dir = tmp_path / "run7"
    (sink,) = make_sinks(["wandb"], run_dir, wandb_project="p", config={"algo": {"eps_high": 0.28}})
    for record in RECORDS:
        sink.write(record)
    sink.close()
    (run,) = runs
    assert run.init == {
        "project": "p",
        "dir": str(run_dir),
        "name": "run7",
        "mode": "offline",
        "config": {"algo": {"eps_high": 0.28}},
    }
    assert [step for step, _ in run.logged] == [0, 1, 2]
    assert run.logged[2][1] == {"reward/mean": 0.5, "entropy/mean": 0.6, "grad/skipped_steps": 0.0}
    assert run.finished


def test_wandb_sink_logs_samples_as_a_table(monkeypatch, tmp_path):
    runs = fake_wandb(monkeypatch)
    (sink,) = make_sinks(["wandb"], tmp_path / "run")
    records = [{"prompt": "p", "completion": "c", "reward": 1.0}, {"prompt": "q", "acc": 0.0}]
    sink.write_samples("train", records, 3)
    ((step, data),) = runs[0].logged
    columns = ["prompt", "completion", "reward", "acc"]
    rows = [["p", "c", 1.0, None], ["q", None, None, 0.0]]
    assert step == 3 and data == {"samples/train": ("table", columns, rows)}


def test_wandb_missing_or_bad_mode(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(DapoError, match="pip install wandb"):
        WandbSink("p", tmp_path, "offline")
    with pytest.raises(DapoError, match="one of online, offline, disabled"):
        WandbSink("p", tmp_path, "cloud")


def test_make_sinks_jsonl_and_errors(monkeypatch, tmp_path):
    (sink,) = make_sinks(["jsonl"], tmp_path)
    sink.write({"step": 1, "acc/mean": 0.5})
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "acc/mean": 0.5}
    with pytest.raises(DapoError, match="unknown metrics sink 'csv'; choose from jsonl"):
        make_sinks(["jsonl", "csv"], tmp_path)
    with pytest.raises(DapoError, match="listed twice"):
        make_sinks(["jsonl", "jsonl"], tmp_path)
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(DapoError, match="pip install wandb"):
        make_sinks(["jsonl", "wandb"], tmp_path)


def test_memory_metrics_see_a_200_mib_allocation():
    # in a fresh process: in this one, freed memory of earlier tests may be reused
    import subprocess
    import sys

    code = """
import json, torch
from dapo_rl.metrics import memory_metrics
before = memory_metrics()
block = torch.ones(200 * 2**20 // 4)  # 200 MiB of float32, touched
print(json.dumps([before, memory_metrics()]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert after["mem/rss"] - before["mem/rss"] > 150
    # the peak never falls and covers the memory in use (imports may have set it higher)
    assert after["mem/peak_rss"] >= before["mem/peak_rss"]
    assert after["mem/peak_rss"] >= after["mem/rss"] - 1


def test_console_legend_names_every_short_label_and_evaluations_show_progress(capsys):
    from dapo_rl.metrics import _CONSOLE_KEYS, LEGEND, ConsoleSink

    legend = LEGEND.removeprefix("bar: ").split(" | ")
    assert [item.split()[0] for item in legend] == list(_CONSOLE_KEYS.values())
    console = ConsoleSink(3, enabled=True)
    console.eval_progress("gsm8k", 40, 200)
    assert console.bar.desc == "gsm8k 40/200" and console.bar.n == 0  # no step counted
    console.eval_progress(None, 0, 0)
    assert console.bar.desc == "train"
    console.close()
    assert "gsm8k 40/200" in capsys.readouterr().err
