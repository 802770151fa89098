"""Hand-written verdicts for the three built-in verifiers, hostile inputs included."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dapo_rl.rewards import Verdict, dapo_answer, gsm8k_answer, math_answer

VERIFIERS = {"dapo_answer": dapo_answer, "gsm8k": gsm8k_answer, "math": math_answer}

PMATRIX = "\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}"
POLAR = "\\left( 3, \\frac{\\pi}{2} \\right)"

# (verifier, completion, reference, expected acc)
CASES = [
    # dapo_answer: last "Answer:" line in the last 300 characters, exact after normalising
    ("dapo_answer", "3 + 4 = 7\nAnswer: 7", "7", True),
    ("dapo_answer", "Answer: $7$", "7", True),
    ("dapo_answer", "answer: 07", "7", True),
    ("dapo_answer", "Answer: 7.", "7", True),
    ("dapo_answer", "Answer: \\boxed{7}", "7", True),
    ("dapo_answer", "Answer: 1,000", "1000", True),
    ("dapo_answer", "Answer: +5", "5", True),
    ("dapo_answer", "Answer: x = 5", "5", True),
    ("dapo_answer", "Answer: 5 \\text{ cm}", "5", True),
    ("dapo_answer", "**Answer:** 12", "12", True),
    ("dapo_answer", "Answer: \\frac12", "\\frac{1}{2}", True),
    ("dapo_answer", "Answer: $\\dfrac{1}{2}$", "\\frac{1}{2}", True),
    ("dapo_answer", "Answer: Evelyn", "\\text{Evelyn}", True),
    ("dapo_answer", "Answer: 6\nWait, that is wrong.\nAnswer: 8", "8", True),
    ("dapo_answer", "Answer: 6\nWait, that is wrong.\nAnswer: 8", "6", False),
    ("dapo_answer", "Answer: 8", "7", False),
    ("dapo_answer", "Answer: -3", "3", False),
    ("dapo_answer", "Answer: 0.5", "\\frac{1}{2}", False),  # exact rule: no algebra
    ("dapo_answer", "so the result is \\boxed{7}", "7", False),  # no Answer: line
    ("dapo_answer", "Answer: 7\n" + "and some more words " * 20, "7", False),  # out of the tail
    # gsm8k: numbers compared by value; the reference may be a worked solution
    ("gsm8k", "48 + 24 = 72\n#### 72", "Natalia sold 48/2 = <<48/2=24>>24.\n#### 72", True),
    ("gsm8k", "Answer: $1,234.", "1234", True),
    ("gsm8k", "She makes 72.0 dollars in total", "72", True),
    ("gsm8k", "So she earns \\boxed{18}.", "#### 18", True),
    ("gsm8k", "Answer: 18 eggs\nChecked with 3 examples.", "18", True),
    ("gsm8k", "Answer: 5 + 3 = 8", "8", True),
    ("gsm8k", "Answer: -4", "-4", True),
    ("gsm8k", "Answer: 4", "-4", False),
    ("gsm8k", "I first got 18. Final: 17", "18", False),
    ("gsm8k", "Answer: 18", "$18.00", True),
    ("gsm8k", "Answer: 1080", "1,080", True),
    ("gsm8k", "I do not know.", "5", False),
    ("gsm8k", "Answer: Sara", "Sara", True),  # a non-numeric reference compares as text
    ("gsm8k", "Answer: 3", "3:4", False),
    # math: symbolic equivalence through math-verify
    ("math", "so \\boxed{\\frac12}", "0.5", True),
    ("math", "so \\boxed{0.5}", "\\frac{1}{2}", True),
    ("math", "Answer: 1/2", "\\frac{1}{2}", True),
    ("math", "The point is \\boxed{(3, \\pi/2)}.", POLAR, True),
    ("math", "The point is \\boxed{\\left(3,\\frac{\\pi}{2}\\right)}.", POLAR, True),
    ("math", "The point is \\boxed{(3, \\pi)}.", POLAR, False),
    ("math", "\\boxed{[1, 2)}", "[1,2)", True),
    ("math", "\\boxed{(1, 2]}", "[1,2)", False),
    ("math", "\\boxed{10 \\text{ cm}}", "10", True),
    ("math", "\\boxed{2\\sqrt{3}}", "\\sqrt{12}", True),
    ("math", "\\boxed{x^2+2x+1}", "(x+1)^2", True),
    ("math", "\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", True),
    ("math", "Answer: $\\frac{14}{3}$", "\\frac{14}{3}", True),
    ("math", "\\boxed{90^\\circ}", "90^\\circ", True),
    ("math", f"\\boxed{{{PMATRIX}}}", "\\begin{pmatrix}-2\\\\-14\\\\-7\\end{pmatrix}", True),
    ("math", "\\boxed{\\{1, 2\\}}", "\\{2,1\\}", True),
    ("math", "First \\boxed{3}, no wait.\nAnswer: 4", "4", True),  # the later marker wins
    ("math", "Answer: 4\nHmm, actually \\boxed{3}", "4", False),
    ("math", "the answer is 5", "5", False),  # no marker
    ("math", "\\boxed{5}", "6", False),
]

TOWER = "\\boxed{10^{10^{10^{10}}}}"
NESTED = "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}"
HUGE = "x" * 200_000
HOSTILE = [
    ("tower", TOWER, "5", False),
    ("tower-answer-line", "Answer: 99999999999^{99999999999}", "5", False),
    ("nested-braces", NESTED, "1", False),
    ("open-braces", "Answer: " + "{" * 200_000, "1", False),
    ("200kB-no-answer", HUGE, "5", False),
    ("200kB-then-answer", HUGE + "\nAnswer: 5", "5", True),
    ("200kB-digits", "9" * 200_000, "5", False),
    ("empty", "", "5", False),
    ("unicode", "Résumé 🙂 – 答案.\nAnswer: 42", "42", True),
    ("control-chars", "\x00\x1b[31m\ufffd\nAnswer: 42\x00", "42", False),
    ("no-answer-line", "I think it is seven", "7", False),
]


def _check(name: str, completion: str, reference: str, expected: bool, limit: float) -> None:
    start = time.monotonic()
    verdict = VERIFIERS[name](completion, reference)
    elapsed = time.monotonic() - start
    assert isinstance(verdict, Verdict)
    assert verdict.acc is expected
    assert verdict.score == (1.0 if expected else -1.0)
    assert elapsed < limit, f"{name} took {elapsed:.2f}s"


@pytest.mark.parametrize(
    "name, completion, reference, expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_verdict_table(name, completion, reference, expected):
    _check(name, completion, reference, expected, limit=5.0)


@pytest.mark.parametrize("name", VERIFIERS)
@pytest.mark.parametrize(
    "case, completion, reference, expected", HOSTILE, ids=[case[0] for case in HOSTILE]
)
def test_hostile_inputs_return_within_the_limit(name, case, completion, reference, expected):
    if case == "control-chars" and name != "dapo_answer":
        expected = name == "gsm8k"  # "42\x00" is still the number 42; math-verify rejects it
    # math runs under its 2 s limit (+ worker start); the string verifiers are microseconds
    _check(name, completion, reference, expected, limit=4.0 if name == "math" else 0.5)


def test_hostile_math_times_out_as_wrong_not_as_error():
    verdict = math_answer(TOWER, "5")
    assert verdict == Verdict(-1.0, False, verdict.status)
    assert verdict.status in ("ok", "timeout")


def test_math_answer_works_off_the_main_thread():
    import threading

    out = []
    thread = threading.Thread(target=lambda: out.append(math_answer("\\boxed{0.5}", "\\frac12")))
    thread.start()
    thread.join(timeout=10)
    assert out == [Verdict(1.0, True)]


TRICKY = st.text(alphabet="Answer:#\\boxed{}$0123456789.,-=+ \nx^_()[]", max_size=300)


@settings(max_examples=300, deadline=None)
@given(completion=st.text(max_size=400) | TRICKY, reference=st.text(max_size=40) | TRICKY)
def test_string_verifiers_never_raise(completion, reference):
    for verifier in (dapo_answer, gsm8k_answer):
        verdict = verifier(completion, reference)
        assert verdict.score in (1.0, -1.0) and verdict.acc == (verdict.score > 0)
        assert verdict.status == "ok"
