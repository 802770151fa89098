"""``gsm8k``: numeric answers compared by value.

Choices:
- The reference is a bare number or a GSM8K worked solution; then the number after the last
  ``####`` is the answer. A reference that is not one number ("3:4", "Sara") falls back to
  ``text.same_answer`` on the marked answer.
- The completion's answer is the first number in whichever marker comes last in its tail:
  an ``Answer:`` line, a ``\\boxed{}`` or a ``####`` line (after the last ``=`` in it, so
  "Answer: 5 + 3 = 8" reads 8). With no marker, the last number of the tail is used.
- Commas, ``$``, units and a trailing period are ignored; values compare as exact fractions,
  so "72.0" == "72"; exponent notation is not read (no 1e999999999 surprises).
"""

from __future__ import annotations

import re
from fractions import Fraction

from dapo_rl.rewards.isolation import bounded
from dapo_rl.rewards.text import (
    MAX_NUMBER_CHARS,
    last_answer_line,
    last_boxed,
    last_hash_answer,
    latest,
    same_answer,
    tail,
)
from dapo_rl.rewards.verdict import Verdict, graded

TAIL_CHARS = 2000  # the final answer of a worked solution sits in its last lines

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _clean(text: str) -> str:
    return text.replace("\\$", "").replace("$", "").replace("\u2212", "-")


def to_number(text: str) -> Fraction | None:
    """Exact value of one numeral such as "-1,234.50", else None."""
    digits = text.replace(",", "")
    if not digits or len(digits) > MAX_NUMBER_CHARS:
        return None
    try:
        return Fraction(digits)
    except (ValueError, ZeroDivisionError):
        return None


def first_number(text: str) -> Fraction | None:
    """The first numeral in ``text`` (after its last ``=``), else None."""
    match = _NUMBER.search(_clean(text).split("=")[-1])
    return to_number(match.group(0)) if match else None


def last_number(text: str) -> Fraction | None:
    """The last numeral in ``text``, else None."""
    numbers = _NUMBER.findall(_clean(text))
    return to_number(numbers[-1]) if numbers else None


def predicted_number(completion: str) -> Fraction | None:
    """The completion's numeric answer: the last marked answer, or the last number."""
    end = tail(completion, TAIL_CHARS)
    marked = latest(last_answer_line(end), last_boxed(end), last_hash_answer(end))
    if marked is not None:
        return first_number(marked)
    return last_number(end)


def reference_number(reference: str) -> Fraction | None:
    """The number after the last ``####`` of a worked solution, or the bare number, else None."""
    answer = _clean(reference.rsplit("####", 1)[-1]).strip().rstrip(".")
    return to_number(answer) if _NUMBER.fullmatch(answer) else None


@bounded
def gsm8k_answer(completion: str, reference: str) -> Verdict:
    """+1.0 if the completion's number equals the reference's, else -1.0.

    >>> gsm8k_answer("She sells 9 eggs for $2 each, so $18.", "... so 9 * 2 = 18\\n#### 18")
    Verdict(score=1.0, acc=True, status='ok')
    """
    expected = reference_number(reference)
    if expected is None:
        marked = latest(*(f(tail(completion, TAIL_CHARS)) for f in (last_answer_line, last_boxed)))
        return graded(marked is not None and same_answer(marked, reference))
    return graded(predicted_number(completion) == expected)
