"""``dapo_answer``: the DAPO-Math reference rule (DAPO paper, section 2.3 rule-based reward).

Only the last ``TAIL_CHARS`` characters are read; the answer is the last ``Answer:`` line
there; it is right when it equals the reference after ``text.normalize``. No ``Answer:``
line means wrong: the format is part of the task, as in the reference implementation.
"""

from __future__ import annotations

from dapo_rl.rewards.isolation import bounded
from dapo_rl.rewards.text import last_answer_line, same_answer, tail
from dapo_rl.rewards.verdict import Verdict, graded

TAIL_CHARS = 300  # the DAPO reference scores only the end of the response


@bounded
def dapo_answer(completion: str, reference: str) -> Verdict:
    """+1.0 if the last ``Answer:`` line matches ``reference`` after normalisation, else -1.0.

    >>> dapo_answer("3 + 4 = 7\\nAnswer: $7$", "7")
    Verdict(score=1.0, acc=True, status='ok')
    """
    found = last_answer_line(tail(completion, TAIL_CHARS))
    return graded(found is not None and same_answer(found[1], reference))
