"""Property tests: random input to every parser and verifier works or raises DapoError.

Config (``parse_override``, ``load_yaml``, ``build``), dataset files (``load_examples`` on
JSONL written to disk) and the built-in verifiers through ``score_all``. Nothing else may
escape: no KeyError, UnicodeDecodeError, RecursionError or TypeError from user input.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dapo_rl import config
from dapo_rl.data.files import Example, load_examples
from dapo_rl.errors import DapoError
from dapo_rl.rewards import Verdict, get_verifier, score_all

KEYS = [key for key, _ in config.keys()]

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
_json = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_key_text = st.sampled_from(KEYS) | st.text(max_size=16) | st.sampled_from(["algo", "train.", ""])


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _one_line(error: DapoError) -> None:
    assert str(error) and "\n" not in str(error)


# --- config --------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40) | st.builds(lambda k, v: f"{k}={v}", _key_text, st.text(max_size=16)))
def test_parse_override_then_build(text):
    try:
        key, value = config.parse_override(text)
        assert isinstance(key, str)
        cfg = config.build(overrides={key: value})
    except DapoError as e:
        _one_line(e)
        return
    assert isinstance(cfg, config.Config)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(_key_text, _json, max_size=5))
def test_build_with_random_keys_and_nested_values(values):
    try:
        cfg = config.build(overrides=values)
    except DapoError as e:
        _one_line(e)
        return
    assert config.from_dict(config.to_dict(cfg)) == cfg


_yaml_docs = (
    st.text(max_size=80).map(str.encode)
    | st.binary(max_size=40)
    | st.dictionaries(_key_text, _json, max_size=4).map(
        lambda tree: yaml.safe_dump(tree, allow_unicode=True).encode()
    )
    | st.sampled_from([b"a: &x {b: *x}\n", b"- 1\n- 2\n", b"train: {steps: [1]}\n", b"\xff\xfe"])
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_yaml_docs)
def test_load_yaml_then_build(workdir, data):
    path = workdir / "config.yaml"
    path.write_bytes(data)
    try:
        values = config.load_yaml(path)
        assert isinstance(values, dict)
        cfg = config.build(file_values=values)
    except DapoError as e:
        _one_line(e)
        return
    assert isinstance(cfg, config.Config)


# --- dataset files ---------------------------------------------------------------------------

_row = st.fixed_dictionaries(
    {},
    optional={
        name: _json
        for name in ("problem", "answer", "question", "prompt", "reward_model", "body", "id")
    },
)
_line = (
    _row.map(json.dumps)
    | _json.map(json.dumps)
    | st.text(max_size=30)
    | st.just('{"problem": "1+1?", "answer": 2}')
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_line, max_size=5), st.sampled_from([None, "gsm8k", "aime", "dapo17k", "nope"]))
def test_load_examples_on_random_jsonl_lines(workdir, lines, fmt):
    path = workdir / "data.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    try:
        examples = load_examples(path, format=fmt)
    except DapoError as e:
        _one_line(e)
        return
    assert examples and all(isinstance(ex, Example) for ex in examples)
    assert all(ex.problem and ex.answer and isinstance(ex.id, str) for ex in examples)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=60))
def test_load_examples_on_random_bytes(workdir, data):
    path = workdir / "bytes.jsonl"
    path.write_bytes(data)
    try:
        load_examples(path)
    except DapoError as e:
        _one_line(e)


# --- verifiers through score_all -------------------------------------------------------------

_tricky = st.sampled_from(
    [
        "Answer: ",
        "\\boxed{",
        "}",
        "####",
        "$",
        "\\frac{1}{2}",
        "^",
        "9^9^9",
        "1,000",
        "-",
        ".",
        "\n",
        "\\sqrt{",
        "x=",
        "∞",
        "1e309",
        "\x00",
    ]
)
_completion = st.lists(_tricky | st.text(max_size=10), max_size=8).map("".join)


def _check_scores(name, completions, references, timeout):
    verdicts, counts = score_all(get_verifier(name), completions, references, timeout=timeout)
    assert len(verdicts) == len(completions)
    for v in verdicts:
        assert isinstance(v, Verdict) and isinstance(v.acc, bool) and math.isfinite(v.score)
    assert set(counts) >= {"timeout", "error", "nonfinite"}
    assert sum(counts.values()) <= len(completions)


@pytest.mark.parametrize("name", ["dapo_answer", "gsm8k"])
@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_completion, _completion), min_size=1, max_size=4))
def test_bounded_verifiers_score_any_text(name, pairs):
    _check_scores(name, [c for c, _ in pairs], [r for _, r in pairs], timeout=2.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(_completion, _completion), min_size=1, max_size=4))
def test_math_verifier_scores_any_text_within_its_limit(pairs):
    _check_scores("math", [c for c, _ in pairs], [r for _, r in pairs], timeout=1.0)


def test_error_quoting_a_field_name_with_a_line_break_stays_one_line(tmp_path):
    # a key "\n" in a data row once split the "fields present" list over two lines
    path = tmp_path / "data.jsonl"
    path.write_text('{"\\n": null}\n', encoding="utf-8")
    with pytest.raises(DapoError) as e:
        load_examples(path, format="aime")
    _one_line(e.value)
    assert "\\n" in str(e.value)
