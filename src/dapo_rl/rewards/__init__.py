"""Verifiers: answer extraction and equivalence, scored under time and memory limits.

A verifier is a pure function ``(completion, reference) -> Verdict`` (DESIGN rule 10).
- ``dapo_answer``: DAPO reference rule, last ``Answer:`` line, exact match after normalising.
- ``math_answer`` ("math"): symbolic equivalence of LaTeX answers via math-verify.
- ``gsm8k_answer`` ("gsm8k"): numeric answers compared by value.
- ``get_verifier(spec)``: a built-in name, ``module.path:function`` or a weighted sum.
- ``score_all``: score a batch with fault isolation and per-call time limits.
- ``extract_answer(completion, spec)``: the answer a verifier reads, as a key for maj@k.

Modules: ``verdict`` (the result type), ``text`` (extraction and normalisation),
``dapo``/``gsm8k``/``symbolic`` (one verifier each), ``extract`` (answers for voting),
``isolation`` (worker processes, ``score_all``), ``registry`` (``get_verifier``).
"""

from dapo_rl.rewards.dapo import dapo_answer
from dapo_rl.rewards.extract import extract_answer
from dapo_rl.rewards.gsm8k import gsm8k_answer
from dapo_rl.rewards.isolation import score_all
from dapo_rl.rewards.registry import (
    VERIFIERS,
    RowReference,
    check_columns,
    get_verifier,
    references,
)
from dapo_rl.rewards.symbolic import math_answer
from dapo_rl.rewards.verdict import Verdict

__all__ = [
    "VERIFIERS",
    "RowReference",
    "Verdict",
    "check_columns",
    "dapo_answer",
    "extract_answer",
    "get_verifier",
    "gsm8k_answer",
    "math_answer",
    "references",
    "score_all",
]
