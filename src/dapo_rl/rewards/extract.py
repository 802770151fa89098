"""``extract_answer``: the final answer a verifier reads from a completion, as a voting key.

Majority voting (maj@k) needs the answer itself, not a verdict. Each built-in verifier's own
extraction is reused, so a vote counts exactly the answer that verifier scores:
- ``dapo_answer``: the last ``Answer:`` line of the scored tail;
- ``gsm8k``: the number ``gsm8k.predicted_number`` reads, as an exact fraction ("72", "1/2");
  with no number, the last marked answer (``Answer:`` / ``\\boxed{}``), for answers like "Sara";
- ``math`` and every other spec (user functions): ``symbolic.final_answer``, the later of the
  last ``\\boxed{}`` and ``Answer:`` line.
Text answers are keyed after ``text.normalize``, and plain numbers by value ("07" and "7.0"
vote together). Keys are cheap string equality: no symbolic parse, so "0.5" and "\\frac12"
vote apart. In a weighted sum the first term decides, as it decides ``acc``.
"""

from __future__ import annotations

from decimal import Decimal

from dapo_rl.rewards.dapo import TAIL_CHARS as DAPO_TAIL
from dapo_rl.rewards.gsm8k import TAIL_CHARS as GSM8K_TAIL
from dapo_rl.rewards.gsm8k import predicted_number
from dapo_rl.rewards.symbolic import final_answer
from dapo_rl.rewards.text import last_answer_line, last_boxed, latest, normalize, plain_number, tail


def _key(answer: str | None) -> str | None:
    """``answer`` normalised; a plain number written by value; None when nothing is left."""
    if answer is None:
        return None
    key = normalize(answer)
    number = plain_number(key)
    if number is not None:
        key = format(number.normalize() + Decimal(0), "f")  # "07" -> "7", "2.50" -> "2.5"
    return key or None


def _first_term(spec: str) -> str:
    """The verifier name of a spec's first term: ``0.8*math+0.2*m:f`` -> ``math``."""
    return spec.split("+", 1)[0].rsplit("*", 1)[-1].strip()


def extract_answer(completion: str, verifier: str) -> str | None:
    """The final answer ``verifier`` (a spec string) would read, as a voting key; None if none.

    >>> extract_answer("2 + 2 = 4\\nAnswer: $4.0$", "dapo_answer")
    '4'
    >>> extract_answer("so 1,080 pens.\\n#### 1,080", "gsm8k")
    '1080'
    """
    match _first_term(verifier):
        case "dapo_answer":
            found = last_answer_line(tail(completion, DAPO_TAIL))
            return _key(None if found is None else found[1])
        case "gsm8k":
            number = predicted_number(completion)
            if number is not None:
                return str(number)
            end = tail(completion, GSM8K_TAIL)
            return _key(latest(last_answer_line(end), last_boxed(end)))
        case _:
            return _key(final_answer(completion))
