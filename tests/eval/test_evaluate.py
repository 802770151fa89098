"""``evaluate`` and ``evaluate_sets`` on scripted completions: every metric hand-computed."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_fakes import FakeEngine, FakeTokenizer

from dapo_rl.data.files import Example, source_format
from dapo_rl.eval import default_verifier, eval_name, evaluate, evaluate_sets, load_eval_files
from dapo_rl.eval.heldout import EvalFile

FIXTURES = Path(__file__).parents[1] / "fixtures"

EXAMPLES = [Example("p1", "4", "1"), Example("p2", "7", "2"), Example("p3", "10", "3")]
GREEDY = {
    "p1": ("Answer: 4", 10, False),  # right
    "p2": ("Answer: 8", 20, True),  # wrong, truncated
    "p3": ("so\n#### 10", 30, False),  # right
}
SAMPLES = {
    # right: 2 of 4; votes 4, 5, 4 (the last has no number): 4 wins -> right
    "p1": [("Answer: 4", 4, False), ("Answer: 5", 4, False), ("4!", 4, False), ("?", 8, True)],
    # right: 2 of 4; votes 5, 7, 5, 7: a tie, 5 came first -> wrong
    "p2": [("Answer: 5", 2, False), ("Answer: 7", 2, False), ("5", 2, False), ("7", 2, False)],
    # right: 0 of 4; votes 3, 4, 2 (one without a number): a tie, 3 first -> wrong
    "p3": [("Answer: 3", 6, False), ("none", 6, True), ("Answer: 4", 6, False), ("2", 6, False)],
}


def _run(k: int, **kw) -> tuple[dict, FakeEngine]:
    tok = FakeTokenizer()
    engine = FakeEngine(tok, GREEDY, SAMPLES)
    res = evaluate(engine, tok, EXAMPLES, "gsm8k", template="plain", max_new_tokens=32, k=k, **kw)
    return res, engine


def test_greedy_metrics():
    res, engine = _run(k=0)
    assert res == {
        "acc": pytest.approx(2 / 3),  # p1 and p3
        "len_mean": pytest.approx(20.0),  # (10 + 20 + 30) / 3
        "truncated_frac": pytest.approx(1 / 3),  # p2
        "timeouts": 0,
        "n": 3,
    }
    assert [(c["n"], c["temperature"]) for c in engine.calls] == [(1, 0.0)]


def test_k_sample_metrics():
    res, engine = _run(k=4, temperature=0.9, top_p=0.7, generator="g")
    assert res["avg@4"] == pytest.approx(4 / 12)  # (2 + 2 + 0) right of 12 samples
    # n = k = 4: pass@4 = 1 - C(4 - c, 4) / C(4, 4) is 1 when c > 0: p1, p2 -> 2 / 3
    assert res["pass@4"] == pytest.approx(2 / 3)
    assert res["maj@4"] == pytest.approx(1 / 3)  # only p1's majority (4) is right
    assert res["len_mean@4"] == pytest.approx((3 * 4 + 8 + 4 * 2 + 4 * 6) / 12)  # 52 / 12
    assert res["truncated_frac@4"] == pytest.approx(2 / 12)
    assert res["zero_var@4"] == pytest.approx(1 / 3)  # correct counts 2, 2, 0: p3 all wrong
    assert res["acc"] == pytest.approx(2 / 3)  # greedy still reported
    sampled = engine.calls[1]
    assert (sampled["n"], sampled["temperature"], sampled["top_p"]) == (4, 0.9, 0.7)
    assert sampled["generator"] == "g"


def test_pass_at_k_with_fewer_samples_drawn_than_problems_right():
    res, _ = _run(k=2)  # the first 2 samples: p1 [1, 0], p2 [0, 1], p3 [0, 0]
    assert res["avg@2"] == pytest.approx(2 / 6)
    assert res["pass@2"] == pytest.approx(2 / 3)
    assert res["maj@2"] == pytest.approx(1 / 3)  # p1: tie 4/5 -> 4 right; p2: 5 first -> wrong


def test_evaluate_sets_prefixes_and_evaluates_a_shared_list_once():
    tok = FakeTokenizer()
    engine = FakeEngine(tok, GREEDY, SAMPLES)
    first = EvalFile("gsm8k", "gsm8k/test.jsonl", "gsm8k", EXAMPLES[:2])
    second = EvalFile("asdiv", "asdiv/test.jsonl", "asdiv", EXAMPLES[2:])
    out = evaluate_sets(
        engine,
        tok,
        first.examples,  # a file task: its first file is also the main set
        (first, second),
        "gsm8k",
        seed=0,
        template="plain",
        max_new_tokens=32,
        k=2,
    )
    assert out["eval/acc"] == out["eval/gsm8k/acc"] == pytest.approx(1 / 2)
    assert out["eval/asdiv/acc"] == 1.0
    assert out["eval/asdiv/avg@2"] == 0.0 and out["eval/gsm8k/pass@2"] == 1.0
    metrics = {"acc", "avg@2", "pass@2", "maj@2", "len_mean", "truncated_frac", "n"}
    for prefix in ("eval/", "eval/gsm8k/", "eval/asdiv/"):
        assert {prefix + m for m in metrics} <= set(out)
    assert len(engine.calls) == 4  # greedy + sampled, for two distinct lists


@pytest.mark.parametrize(
    "path, name",
    [
        ("../shared/data/gsm8k/test.jsonl", "gsm8k"),
        ("data/math500/test.jsonl", "math500"),
        ("data/dapo/train-00000-of-00001.parquet", "dapo"),
        ("tests/fixtures/aime_small.jsonl", "aime_small"),
        ("my set/odd name.json", "odd_name"),
    ],
)
def test_eval_name(path, name):
    assert eval_name(path) == name


def test_load_eval_files_names_each_file_once():
    gsm, asdiv = FIXTURES / "gsm8k_small.jsonl", FIXTURES / "asdiv_small.jsonl"
    files = load_eval_files(f"{gsm}, {asdiv},{gsm}", limit=2)
    assert [f.name for f in files] == ["gsm8k_small", "asdiv_small", "gsm8k_small_2"]
    assert [f.format for f in files] == ["gsm8k", "asdiv", "gsm8k"]
    assert [len(f.examples) for f in files] == [2, 2, 2]
    assert files[0].examples[0].answer == "72"
    assert load_eval_files(None) == () and load_eval_files(" , ") == ()


@pytest.mark.parametrize(
    "fixture, verifier",
    [
        ("gsm8k_small.jsonl", "gsm8k"),
        ("asdiv_small.jsonl", "gsm8k"),
        ("math500_small.jsonl", "math"),
        ("aime_small.jsonl", "math"),
        ("amc_small.jsonl", "math"),
        ("dapo17k_small.json", "dapo_answer"),
    ],
)
def test_the_verifier_follows_the_layout(fixture, verifier):
    assert default_verifier(source_format(FIXTURES / fixture)) == verifier
