"""The README's "Your own task" section, run as written on the tiny random model.

The section's CSV block becomes train.csv and test.csv, its reward block my_reward.py, its
bash block runs with ``dapo`` as ``python -m dapo_rl.cli`` and its Python block runs as a
script; ``MODEL=tiny-random``, ``STEPS=2`` and smaller rollouts (``SMALL``) keep it short.
A README edit that breaks the example breaks this test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dapo_rl

README = Path(__file__).parents[1] / "README.md"
SRC = Path(dapo_rl.__file__).parents[1]
# the rollout settings of tests/tiny_run.py, in place of the README's 64-token completions
SMALL = {
    "rollout.max_new_tokens": 8,
    "algo.overlong_buffer": 4,
    "rollout.group_size": 4,
    "rollout.prompts_per_step": 2,
    "eval.size": 4,
    "train.micro_batch_size": 4,
}


def _small(block: str, lang: str) -> str:
    """``block`` with its first ``rollout.max_new_tokens=64`` (training) made small."""
    if lang == "bash":
        old, new = "rollout.max_new_tokens=64", " ".join(f"{k}={v}" for k, v in SMALL.items())
        block = block.replace(old, new, 1).replace(old, "rollout.max_new_tokens=8")
    else:
        old = "rollout__max_new_tokens=64,"
        new = " ".join(f"{k.replace('.', '__')}={v}," for k, v in SMALL.items())
    assert old in block or lang == "bash"
    return block.replace(old, new)


def _blocks() -> dict[str, list[str]]:
    text = README.read_text()
    section = text.split("## Your own task", 1)[1].split("\n## ", 1)[0]
    out: dict[str, list[str]] = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        out.setdefault(lang, []).append(body)
    return out


def _run(args: list[str], cwd: Path, env: dict) -> str:
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


@pytest.mark.slow
def test_readme_own_task_example_runs(tmp_path):
    blocks = _blocks()
    assert set(blocks) == {"csv", "python", "bash"} and len(blocks["python"]) == 2
    (tmp_path / "train.csv").write_text(blocks["csv"][0])
    (tmp_path / "test.csv").write_text(blocks["csv"][0])
    (tmp_path / "my_reward.py").write_text(blocks["python"][0])
    (tmp_path / "bin").mkdir()
    shim = tmp_path / "bin" / "dapo"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m dapo_rl.cli "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, MODEL="tiny-random", STEPS="2", PYTHONPATH=str(SRC))
    env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"
    env.pop("PYTHONWARNINGS", None)

    bash = _small(blocks["bash"][0], "bash")
    out = _run(["bash", "-euo", "pipefail", "-c", bash], tmp_path, env)
    assert "config:\nmodel:\n  name: tiny-random\n" in out  # the resolved config as YAML
    assert "bar: R mean reward" in out  # the legend of the progress bar's labels
    run = tmp_path / "runs" / "own-task"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    assert "eval/acc" in records[0] and "eval/acc" in records[-1]
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    kinds = {(s["step"], s["kind"]) for s in samples}
    assert {(0, "eval"), (1, "train"), (2, "train"), (2, "eval")} <= kinds
    first = next(s for s in samples if s["kind"] == "train")
    assert first["prompt"] == "Ann has 3 apples. She eats 1. How many apples are left?" or (
        first["prompt"] in [f"{b} {q}" for b, q, *_ in (ln.split(",") for ln in
                                                       blocks["csv"][0].splitlines()[1:])]
    )  # fmt: skip
    assert set(first) >= {"prompt", "completion", "reward", "acc", "length", "truncated"}
    assert "verifier: my_reward:reward" in out and "acc" in out  # dapo eval's table
    assert (tmp_path / "own-task.html").stat().st_size > 1000

    out = _run([sys.executable, "-c", _small(blocks["python"][1], "python")], tmp_path, env)
    assert "'verifier': 'my_reward:reward'" in out
    py_records = (tmp_path / "runs" / "own-task-py" / "metrics.jsonl").read_text().splitlines()
    assert len(py_records) == 3
