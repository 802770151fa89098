"""The ``dapo`` command as a user runs it: a subprocess in a fresh directory.

Every bad input must end the process with exit status 2 and one ``error:`` line on
stderr, before any model loads and before anything is written to the run directory.
The subprocesses start together when the module starts (each in its own directory).
An input that passes the config fails only in the run's setup, after torch and
transformers are imported (seconds of CPU per process): one such case runs as a
subprocess, the others call ``cli.main`` in this process, paying the import once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dapo_rl import config

CLI = [sys.executable, "-m", "dapo_rl.cli"]
TIMEOUT = 120


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    # an empty model cache: a model that loads would have to be converted into it
    env.update(DAPO_RL_CACHE=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("PYTHONWARNINGS", None)
    return env


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=_env(cwd / "cache"), capture_output=True, text=True, timeout=TIMEOUT
    )


# id -> (arguments, files to create in the working directory, expected error text)
BAD_INPUTS = {
    "unknown_key": (
        ["algo.eps_hgh=0.3"],
        {},
        "error: unknown config key 'algo.eps_hgh' (did you mean algo.eps_high?)",
    ),
    "not_key_value": (["algo.eps_high"], {}, "error: override 'algo.eps_high' is not KEY=VALUE"),
    "wrong_type": (["train.steps=abc"], {}, "error: config key train.steps: expected int"),
    "invalid_value": (["algo.eps_high=-1"], {}, "error: algo.eps_high must be >= 0"),
    "group_size_1": (["rollout.group_size=1"], {}, "error: rollout.group_size must be >= 2"),
    "overlong_buffer": (
        ["algo.overlong_buffer=64"],
        {},
        "error: algo.overlong_buffer must be in (0, rollout.max_new_tokens=64)",
    ),
    "unknown_preset": (["preset=nope"], {}, "error: unknown preset 'nope'"),
    # used to fail at the first step, after the run directory was written
    "unknown_template": (["data.template=nope"], {}, "error: data.template must be auto, dapo,"),
    "infinite_lr": (["train.lr=.inf"], {}, "error: train.lr must be a finite number"),
    "nan_temperature_in_config": (
        ["--config", "c.yaml"],
        {"c.yaml": "rollout:\n  temperature: .nan\n"},
        "error: rollout.temperature must be a finite number",
    ),
    "missing_config": (
        ["--config", "missing.yaml"],
        {},
        "error: cannot read config file missing.yaml",
    ),
    "malformed_config": (
        ["--config", "bad.yaml"],
        {"bad.yaml": "train:\n  steps: 3\n   lr: 2\n"},  # line 3 over-indented
        "error: config file bad.yaml line 3: not valid YAML",
    ),
    "invalid_value_in_config": (
        ["--config", "c.yaml"],
        {"c.yaml": "algo:\n  eps_high: -1\n"},
        "error: algo.eps_high must be >= 0",
    ),
    # passes the config, fails in the run's setup (still before any model loads)
    "missing_data_file": (
        ["data.path=missing.jsonl"],
        {},
        "error: dataset file not found: missing.jsonl",
    ),
    # HF_HUB_OFFLINE is read when huggingface_hub is imported: a fresh process only
    "hub_id_while_offline": (
        ["model.name=no-such-org/no-such-model"],
        {},
        "error: cannot load the tokenizer of 'no-such-org/no-such-model': We couldn't connect",
    ),
}

# Bad inputs that pass the config and fail in the run's setup, run through cli.main.
SETUP_BAD_INPUTS = {
    "unknown_model_alias": (["model.name=nope"], {}, "error: unknown model 'nope'"),
    "missing_model_path": (
        ["model.name=./missing_dir"],
        {},
        "error: model path ./missing_dir does not exist",
    ),
    "model_dir_without_config": (
        ["model.name=./empty_model"],
        {"empty_model/README": "no weights here\n"},
        "error: model path ./empty_model has no config.json",
    ),
    "missing_eval_file": (
        ["eval.path=missing_eval.jsonl"],
        {},
        "error: dataset file not found: missing_eval.jsonl",
    ),
    "model_dir_without_tokenizer_or_weights": (
        ["model.name=./config_only"],
        {"config_only/config.json": '{"model_type": "llama"}'},
        "error: cannot load the tokenizer of './config_only': no tokenizer files it can read",
    ),
}


def _write(cwd: Path, files: dict[str, str]) -> list[str]:
    for rel, text in files.items():
        (cwd / rel).parent.mkdir(parents=True, exist_ok=True)
        (cwd / rel).write_text(text)
    return _listing(cwd)


def _listing(cwd: Path) -> list[str]:
    return sorted(p.relative_to(cwd).as_posix() for p in cwd.rglob("*"))


@pytest.fixture(scope="module", autouse=True)
def bad_input_procs(tmp_path_factory):
    """Start every bad-input command at once; id -> (process, working dir, files before)."""
    procs = {}
    for name, (args, files, _) in BAD_INPUTS.items():
        cwd = tmp_path_factory.mktemp(name)
        before = _write(cwd, files)
        proc = subprocess.Popen(
            [*CLI, "train", *args, f"run.dir={cwd / 'run'}"],
            cwd=cwd,
            env=_env(cwd / "cache"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs[name] = (proc, cwd, before)
    yield procs
    for proc, _, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _check_failure(rc, out, err, cwd, before, expected):
    assert rc == 2, (rc, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(expected), lines[0]
    assert out == ""
    assert not (cwd / "run").exists()
    assert not (cwd / "cache").exists()  # no model was loaded or converted
    assert _listing(cwd) == before  # nothing else created either (no runs/default)


@pytest.fixture
def process_state(monkeypatch):
    """Restore what ``cli.main`` changes in this process: env, torch's seed, HF verbosity."""
    import torch
    from transformers.utils import logging as hf_logging

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rng, verbosity = torch.random.get_rng_state(), hf_logging.get_verbosity()
    yield
    torch.random.set_rng_state(rng)
    hf_logging.set_verbosity(verbosity)
    hf_logging.enable_progress_bar()


@pytest.mark.parametrize("name", list(SETUP_BAD_INPUTS))
def test_setup_bad_input_in_process(name, tmp_path, monkeypatch, capsys, process_state):
    from dapo_rl import cli

    args, files, expected = SETUP_BAD_INPUTS[name]
    before = _write(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAPO_RL_CACHE", str(tmp_path / "cache"))
    rc = cli.main(["train", *args, f"run.dir={tmp_path / 'run'}"])
    captured = capsys.readouterr()
    _check_failure(rc, captured.out, captured.err, tmp_path, before, expected)


@pytest.mark.parametrize("module", ["wandb", "torch.utils.tensorboard"])
def test_a_missing_sink_package_writes_nothing(
    module, tmp_path, monkeypatch, capsys, process_state
):
    """The sinks used to open after the run directory was written: the corrected command
    was then refused with "already holds a run"."""
    from dapo_rl import cli

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAPO_RL_CACHE", str(tmp_path / "cache"))
    sink = "wandb" if module == "wandb" else "tensorboard"
    rc = cli.main(["train", f"log.sinks={sink}", f"run.dir={tmp_path / 'run'}"])
    captured = capsys.readouterr()
    expected = f"error: metrics sink '{sink}' needs the {sink} package"
    _check_failure(rc, captured.out, captured.err, tmp_path, [], expected)


def test_a_model_dir_without_weights_writes_nothing(
    tmp_path, monkeypatch, capsys, process_state, tokenizer
):
    from dapo_rl import cli
    from dapo_rl.models import tiny_config

    folder = tmp_path / "no_weights"
    tiny_config(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id).save_pretrained(
        folder
    )
    tokenizer.save_pretrained(folder)
    before = _listing(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAPO_RL_CACHE", str(tmp_path / "cache"))
    rc = cli.main(["train", "model.name=./no_weights", f"run.dir={tmp_path / 'run'}"])
    captured = capsys.readouterr()
    expected = "error: cannot load model './no_weights': Error no file named model.safetensors"
    _check_failure(rc, captured.out, captured.err, tmp_path, before, expected)


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_error_line_and_writes_nothing(name, bad_input_procs):
    proc, cwd, before = bad_input_procs[name]
    out, err = proc.communicate(timeout=TIMEOUT)
    _check_failure(proc.returncode, out, err, cwd, before, BAD_INPUTS[name][2])


def test_train_help_lists_every_key(tmp_path):
    res = run([*CLI, "train", "--help"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    listed = {line.split()[0] for line in res.stdout.splitlines() if line.startswith("  ")}
    missing = [key for key, _ in config.keys() if key not in listed]
    assert not missing
    assert "--preset" in res.stdout and "KEY=VALUE" in res.stdout
    assert list(tmp_path.iterdir()) == []


def _entry_point() -> str | None:
    beside = Path(sys.executable).with_name("dapo")
    return str(beside) if beside.exists() else shutil.which("dapo")


@pytest.mark.skipif(_entry_point() is None, reason="the dapo script is not installed")
def test_installed_dapo_script(tmp_path):
    res = run([_entry_point(), "--help"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "train" in res.stdout and "eval" in res.stdout
    res = run([_entry_point(), "train", "rollout.group_size=1", "run.dir=run"], tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("error: rollout.group_size must be >= 2")
    assert not (tmp_path / "run").exists()


def test_unknown_preset_option_is_a_usage_error(tmp_path):
    res = run([*CLI, "train", "--preset", "nope", "run.dir=run"], tmp_path)
    assert res.returncode == 2
    assert "invalid choice: 'nope'" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_no_command_is_a_usage_error(tmp_path):
    res = run(CLI, tmp_path)
    assert res.returncode == 2
    assert "usage: dapo" in res.stderr
