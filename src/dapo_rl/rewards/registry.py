"""``get_verifier``: a verifier from its config string.

Spec grammar:
- a built-in name: ``dapo_answer``, ``math``, ``gsm8k``;
- ``module.path:function``: a user function ``(completion, reference) -> Verdict | float |
  bool | (score, acc)``, normalised to a Verdict by ``verdict.as_verdict``;
- a weighted sum of those, ``0.8*math+0.2*my_mod:fmt``: scores add with their weights (a
  missing weight is 1), ``acc`` comes from the first term, and any failed term fails the sum.
The same spec always returns the same object, so ``score_all`` reuses its worker processes.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from functools import cache, wraps

from dapo_rl.errors import DapoError
from dapo_rl.rewards.dapo import dapo_answer
from dapo_rl.rewards.gsm8k import gsm8k_answer
from dapo_rl.rewards.isolation import Verifier, bounded, is_bounded
from dapo_rl.rewards.symbolic import math_answer
from dapo_rl.rewards.verdict import Verdict, as_verdict, failure

VERIFIERS: dict[str, Verifier] = {
    "dapo_answer": dapo_answer,
    "math": math_answer,
    "gsm8k": gsm8k_answer,
}

_TERM = re.compile(r"\s*(?:([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?([\w.:]+)\s*")
_USER = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def _valid() -> str:
    names = ", ".join(VERIFIERS)
    return f"use one of {names}, 'module.path:function', or a weighted sum like '0.8*math+0.2*m:f'"


def _user_function(spec: str) -> Verifier:
    module_name, function_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise DapoError(f"verifier '{spec}': cannot import {module_name} ({error})") from error
    fn = getattr(module, function_name, None)
    if not callable(fn):
        raise DapoError(f"verifier '{spec}': {module_name} has no function {function_name}")

    @wraps(fn)
    def verifier(completion: str, reference: str) -> Verdict:
        return as_verdict(fn(completion, reference))

    return verifier


def _single(name: str) -> Verifier:
    if name in VERIFIERS:
        return VERIFIERS[name]
    if _USER.fullmatch(name):
        return _user_function(name)
    raise DapoError(f"unknown verifier '{name}': {_valid()}")


def weighted_sum(terms: list[tuple[float, Verifier]]) -> Verifier:
    """sum(w * score) over ``terms``; acc from the first term; a failed term fails the sum."""

    def verifier(completion: str, reference: str) -> Verdict:
        verdicts = [as_verdict(fn(completion, reference)) for _, fn in terms]
        failed = next((v.status for v in verdicts if v.status != "ok"), None)
        if failed is not None:
            return failure(failed)
        score = sum(weight * v.score for (weight, _), v in zip(terms, verdicts, strict=True))
        return Verdict(score, verdicts[0].acc)

    return bounded(verifier) if all(is_bounded(fn) for _, fn in terms) else verifier


@cache
def get_verifier(spec: str) -> Callable[[str, str], Verdict]:
    """The verifier named by ``spec`` (see the module docstring); DapoError if unknown."""
    if not isinstance(spec, str) or not spec.strip():
        raise DapoError(f"empty verifier spec: {_valid()}")
    parts = spec.split("+")
    terms = [_TERM.fullmatch(part) for part in parts]
    if not all(terms):
        raise DapoError(f"cannot read verifier spec '{spec}': {_valid()}")
    if len(terms) == 1 and terms[0][1] is None:
        return _single(terms[0][2])
    weighted = [(float(t[1]) if t[1] else 1.0, _single(t[2])) for t in terms]
    if not all(math.isfinite(w) for w, _ in weighted):
        raise DapoError(f"verifier spec '{spec}' has a non-finite weight")
    return weighted_sum(weighted)
