"""``dapo eval`` end to end on the tiny random model, and its one-line errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dapo_rl import cli
from dapo_rl.eval import heldout

FIXTURES = Path(__file__).parents[1] / "fixtures"
SETTINGS = {
    "model",
    "data",
    "name",
    "format",
    "verifier",
    "template",
    "max_new_tokens",
    "k",
    "temperature",
    "top_p",
    "seed",
}
GREEDY = {"acc", "len_mean", "truncated_frac", "timeouts", "n"}
SAMPLED = {"avg@2", "pass@2", "maj@2", "len_mean@2", "truncated_frac@2", "zero_var@2"}


def test_eval_writes_every_metric(tmp_path, capsys):
    out = tmp_path / "metrics.json"
    data = str(FIXTURES / "gsm8k_small.jsonl")
    argv = ["eval", "--model", "tiny-random", "--data", data, "--k", "2"]
    rc = cli.main([*argv, "--limit", "2", "--max-new-tokens", "4", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res) == SETTINGS | GREEDY | SAMPLED
    assert (res["format"], res["verifier"], res["template"]) == ("gsm8k", "gsm8k", "dapo")
    assert (res["n"], res["k"], res["max_new_tokens"]) == (2, 2, 4)
    assert (res["temperature"], res["top_p"]) == (1.0, 0.7)  # DAPO's evaluation sampling
    assert 1 <= res["len_mean"] <= 4 and 1 <= res["len_mean@2"] <= 4
    assert all(0.0 <= res[key] <= 1.0 for key in ("acc", "avg@2", "pass@2", "maj@2"))
    printed = capsys.readouterr().out
    assert "verifier: gsm8k" in printed and "maj@2" in printed
    assert f"metrics written to {out}" in printed


def test_greedy_only_and_an_explicit_verifier(tmp_path):
    out = tmp_path / "metrics.json"
    argv = ["eval", "--model", "tiny-random", "--data", str(FIXTURES / "math500_small.jsonl")]
    argv += ["--verifier", "dapo_answer", "--template", "boxed", "--max-new-tokens", "3"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res) == SETTINGS | GREEDY
    assert (res["format"], res["verifier"], res["template"]) == ("math500", "dapo_answer", "boxed")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "missing.jsonl"], "error: dataset file not found: missing.jsonl"),
        (["--data", "notes.txt"], "error: notes.txt: unsupported file type '.txt'"),
        (["--data", "odd.jsonl"], "cannot tell the dataset format from fields text"),
        (["--data", "bad.jsonl"], "error: bad.jsonl:1: malformed JSON line"),
        (["--data", "GSM", "--template", "nope"], "error: unknown template 'nope'"),
        (["--data", "GSM", "--verifier", "nope"], "error: unknown verifier 'nope'"),
        (["--data", "GSM", "--limit", "0"], "error: limit must be at least 1, got 0"),
        (["--data", "GSM", "--k", "-1"], "error: --k must be >= 0, got -1"),
        (["--data", "GSM", "--top-p", "0"], "error: --top-p must be in (0, 1], got 0.0"),
        (["--data", "GSM", "algo.eps_high=0.3"], "error: dapo eval takes data.*, rewards.*"),
        (
            ["--data", "GSM", "data.template=x"],
            "error: data.template must be auto, dapo, dapo_oneshot",
        ),
        (["--data", "GSM", "rewards.fn=nope"], "error: unknown verifier 'nope'"),
        (["--data", "odd.jsonl", "data.answer_field=text"], "cannot tell the dataset format"),
        ([], "error: evaluate: give a data file"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "odd.jsonl").write_text('{"text": "hi"}\n')
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    monkeypatch.setattr(heldout, "load_policy", _no_model)
    args = [str(FIXTURES / "gsm8k_small.jsonl") if a == "GSM" else a for a in args]
    assert cli.main(["eval", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")


def _no_model(*args, **kwargs):
    raise AssertionError("a bad input must fail before the model loads")
