"""``math``: symbolic equivalence of LaTeX answers with math-verify.

Choices:
- The final answer is the last ``\\boxed{}`` or the last ``Answer:`` line in the last
  ``TAIL_CHARS`` characters, whichever comes later; no marker means wrong. It is wrapped as
  ``\\boxed{...}`` and parsed by math-verify, as is the reference, so ``\\frac12``, ``0.5`` and
  ``1/2`` agree, tuples and intervals compare structurally and ``\\text{ cm}`` units drop.
- When math-verify cannot tell, the DAPO string rule (``text.same_answer``) still may match:
  answers like ``\\text{Evelyn}`` need no algebra.
- Parsing can take unbounded time and memory (``\\boxed{10^{10^{10^{10}}}}``), so a call made
  in the trainer is sent to a worker process (``isolation``), where it runs under a time and
  memory limit; math-verify's own signal-based timeouts are off (``parsing_timeout=None``).
- Extracted answers longer than ``MAX_ANSWER_CHARS`` or nested deeper than ``text.MAX_DEPTH``
  are not parsed at all.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from dapo_rl.rewards.isolation import in_worker, score_all
from dapo_rl.rewards.text import last_answer_line, last_boxed, latest, same_answer, tail, unwrap
from dapo_rl.rewards.verdict import Verdict, graded

TAIL_CHARS = 2000  # room for a long boxed answer (a matrix) at the end of a solution
MAX_ANSWER_CHARS = 1000
DEFAULT_TIMEOUT = 2.0  # seconds per direct math_answer call; score_all takes its own


@lru_cache(maxsize=1)
def _math_verify():
    """Import math-verify once, with its own (signal-based) timeout warnings silenced."""
    import math_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    configs = (
        math_verify.LatexExtractionConfig(boxed_match_priority=0),
        math_verify.ExprExtractionConfig(),
    )
    return math_verify, configs


def _parse(answer: str) -> list:
    math_verify, configs = _math_verify()
    return math_verify.parse("\\boxed{" + answer + "}", list(configs), parsing_timeout=None)


@lru_cache(maxsize=4096)
def _parse_reference(reference: str) -> list:
    return _parse(unwrap(reference))  # a group of G completions shares one reference


def warm() -> None:
    """Import math-verify and compile its patterns (about 0.4 s, once per process)."""
    math_verify, _ = _math_verify()
    math_verify.verify(_parse("1"), _parse("\\frac{2}{2}"), timeout_seconds=None)


def final_answer(completion: str) -> str | None:
    """The last ``\\boxed{}`` content or ``Answer:`` line, whichever is later, unwrapped."""
    end = tail(completion, TAIL_CHARS)
    found = latest(last_boxed(end), last_answer_line(end))
    return None if found is None else unwrap(found)


def math_verdict(completion: str, reference: str) -> Verdict:
    """The unbounded check; call only under a time limit (in a worker)."""
    answer = final_answer(completion)
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return graded(False)
    if same_answer(answer, reference):
        return graded(True)
    math_verify, _ = _math_verify()
    gold = _parse_reference(reference)
    return graded(bool(gold) and math_verify.verify(gold, _parse(answer), timeout_seconds=None))


def math_answer(completion: str, reference: str) -> Verdict:
    """+1.0 if the final answer is mathematically equal to ``reference``, else -1.0.

    Runs under a ``DEFAULT_TIMEOUT`` second limit in a worker process; a timeout is wrong.

    >>> math_answer("so it is \\\\boxed{\\\\frac12}", "0.5")
    Verdict(score=1.0, acc=True, status='ok')
    """
    if in_worker():
        return math_verdict(completion, reference)
    return score_all(math_answer, [completion], [reference], timeout=DEFAULT_TIMEOUT)[0][0]
