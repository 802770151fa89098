"""get_verifier specs and score_all's fault isolation: raising, hanging, NaN, crashing calls."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from dapo_rl.errors import DapoError
from dapo_rl.rewards import (
    VERIFIERS,
    Verdict,
    dapo_answer,
    get_verifier,
    gsm8k_answer,
    math_answer,
    score_all,
)
from dapo_rl.rewards.isolation import is_bounded

HERE = Path(__file__).parent
MATH500 = Path(__file__).parents[2].parent / "shared" / "data" / "math500" / "test.jsonl"


@pytest.fixture(autouse=True)
def _helpers_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))  # makes "dapo_test_verifiers:..." importable


def test_builtin_names():
    assert get_verifier("dapo_answer") is dapo_answer
    assert get_verifier("math") is math_answer
    assert get_verifier("gsm8k") is gsm8k_answer
    assert set(VERIFIERS) == {"dapo_answer", "math", "gsm8k"}


@pytest.mark.parametrize(
    "function, completion, expected",
    [
        ("exact", "7", Verdict(1.0, True)),  # bool -> +1 / -1
        ("exact", "8", Verdict(-1.0, False)),
        ("length_score", "abcde", Verdict(0.5, True)),  # float -> acc = score > 0
        ("length_score", "", Verdict(0.0, False)),
        ("pair", "7", Verdict(0.5, True)),  # (score, acc)
        ("verdict", "anything", Verdict(0.25, True)),
    ],
)
def test_user_functions_by_dotted_path_are_normalised(function, completion, expected):
    verifier = get_verifier(f"dapo_test_verifiers:{function}")
    assert verifier(completion, "7") == expected
    assert get_verifier(f"dapo_test_verifiers:{function}") is verifier  # one object per spec
    verdicts, counts = score_all(verifier, [completion], ["7"])
    assert verdicts == [expected] and counts == {"timeout": 0, "error": 0, "nonfinite": 0}


def test_weighted_sum_adds_scores_and_takes_acc_from_the_first_term():
    verifier = get_verifier("0.8*math + 0.2*dapo_test_verifiers:has_answer_line")
    right = verifier("Answer: \\frac{1}{2}", "0.5")
    assert math.isclose(right.score, 0.8 * 1.0 + 0.2 * 1.0) and right.acc
    wrong = verifier("Answer: 3", "0.5")
    assert math.isclose(wrong.score, 0.8 * -1.0 + 0.2 * 1.0) and not wrong.acc
    unmarked = verifier("3", "3")
    assert math.isclose(unmarked.score, -0.8) and not unmarked.acc
    verdicts, counts = score_all(verifier, ["Answer: 0.5", "Answer: 1"], ["1/2", "2"])
    assert [v.acc for v in verdicts] == [True, False] and sum(counts.values()) == 0


def test_weighted_sum_of_builtins_stays_in_process():
    verifier = get_verifier("0.5*dapo_answer+0.5*gsm8k")
    assert is_bounded(verifier)
    assert verifier("The total is 7.", "7") == Verdict(0.0, False)  # gsm8k right, dapo wrong
    assert get_verifier("2*gsm8k")("Answer: 7", "7") == Verdict(2.0, True)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("maths", "unknown verifier 'maths'"),
        ("", "empty verifier spec"),
        ("0.8*", "cannot read verifier spec"),
        ("0.5*math+", "cannot read verifier spec"),
        ("no_such_module_xyz:fn", "cannot import no_such_module_xyz"),
        ("dapo_test_verifiers:missing", "has no function missing"),
    ],
)
def test_bad_specs_raise_a_project_error_naming_valid_ones(spec, fragment):
    with pytest.raises(DapoError) as info:
        get_verifier(spec)
    assert fragment in str(info.value)
    if "unknown" in fragment:
        assert all(name in str(info.value) for name in VERIFIERS)


def test_score_all_counts_every_kind_of_failure_and_keeps_order():
    verifier = get_verifier("dapo_test_verifiers:chaos")
    completions = ["ok", "raise", "ok", "hang", "nan", "stubborn", "inf", "ok"]
    completions += ["oom", "exit", "crash", "bad", "ok"]
    start = time.monotonic()
    verdicts, counts = score_all(verifier, completions, ["-"] * len(completions), timeout=0.5)
    elapsed = time.monotonic() - start
    assert counts == {"timeout": 2, "error": 4, "nonfinite": 2}
    expected = {
        "ok": Verdict(1.0, True),
        "bad": Verdict(-1.0, False),
        "raise": Verdict(-1.0, False, "error"),
        "oom": Verdict(-1.0, False, "error"),
        "exit": Verdict(-1.0, False, "error"),
        "crash": Verdict(-1.0, False, "error"),
        "hang": Verdict(-1.0, False, "timeout"),
        "stubborn": Verdict(-1.0, False, "timeout"),
        "nan": Verdict(-1.0, False, "nonfinite"),
        "inf": Verdict(-1.0, False, "nonfinite"),
    }
    assert verdicts == [expected[c] for c in completions]
    assert elapsed < 6.0  # 0.5 s timer for "hang", 0.5 s + 1 s grace for "stubborn"
    # the replaced workers keep serving
    assert score_all(verifier, ["ok"] * 3, ["-"] * 3)[0] == [Verdict(1.0, True)] * 3


def test_an_interrupted_batch_does_not_leak_into_the_next(monkeypatch):
    from dapo_rl.rewards.isolation import _Pool

    verifier = get_verifier("dapo_test_verifiers:exact")
    drain = _Pool._drain

    def interrupted(self, k, results, timeout):
        monkeypatch.setattr(_Pool, "_drain", drain)
        raise KeyboardInterrupt

    monkeypatch.setattr(_Pool, "_drain", interrupted)
    with pytest.raises(KeyboardInterrupt):
        score_all(verifier, ["1"] * 40, ["1"] * 40)
    verdicts, _ = score_all(verifier, ["1", "2", "3"], ["1", "1", "3"])
    assert [v.acc for v in verdicts] == [True, False, True]


def test_wrong_return_type_is_an_error_not_a_crash():
    verdicts, counts = score_all(get_verifier("dapo_test_verifiers:wrong_type"), ["a"], ["b"])
    assert verdicts == [Verdict(-1.0, False, "error")] and counts["error"] == 1


def test_inline_verifiers_are_guarded_too():
    def flaky(completion: str, reference: str) -> Verdict:
        if completion == "boom":
            raise ValueError("bad")
        return Verdict(float("nan") if completion == "nan" else 1.0, True)

    flaky._dapo_bounded = True
    verdicts, counts = score_all(flaky, ["boom", "nan", "fine"], ["", "", ""])
    assert [v.status for v in verdicts] == ["error", "nonfinite", "ok"]
    assert counts == {"timeout": 0, "error": 1, "nonfinite": 1}


def test_closures_run_in_workers_without_pickling():
    seen = {"7"}
    verdicts, _ = score_all(lambda c, r: c in seen, ["7", "8"], ["", ""])
    assert [v.acc for v in verdicts] == [True, False]


def test_score_all_arguments():
    assert score_all(math_answer, [], []) == ([], {"timeout": 0, "error": 0, "nonfinite": 0})
    with pytest.raises(ValueError):
        score_all(dapo_answer, ["a"], [])
    with pytest.raises(ValueError):
        score_all(dapo_answer, ["a"], ["a"], timeout=0)


def _math500_batch(n: int = 256) -> tuple[list[str], list[str]]:
    if MATH500.is_file():
        rows = [json.loads(line) for line in MATH500.read_text().splitlines()[:n]]
        return [r["solution"] for r in rows], [r["answer"] for r in rows]
    answers = [f"\\frac{{{i}}}{{{i + 1}}}" for i in range(n)]
    return [f"so the answer is $\\boxed{{{a}}}$." for a in answers], answers


def test_scoring_256_completions_is_right_in_a_warm_pool():
    # how fast is a benchmark's question, not a test's (no timed asserts): this checks the
    # batch path gives every verdict, wrong pairs included, without errors
    completions, references = _math500_batch()
    answers = [f"...\nAnswer: {r}" for r in references]
    verdicts, _ = score_all(dapo_answer, answers, references)
    assert all(v.acc for v in verdicts)
    score_all(math_answer, completions[:1], references[:1])  # the worker starts once
    verdicts, counts = score_all(math_answer, completions, references[1:] + references[:1])
    assert counts["error"] == 0
    verdicts, counts = score_all(math_answer, completions, references)
    assert sum(v.acc for v in verdicts) >= 250 and counts["error"] == 0
