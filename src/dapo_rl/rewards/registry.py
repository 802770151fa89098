"""``get_verifier``: a verifier from its config string.

Spec grammar:
- a built-in name: ``dapo_answer``, ``math``, ``gsm8k``;
- ``module.path:function``: a user function ``(completion, reference) -> Verdict | float |
  bool | (score, acc)``, normalised to a Verdict by ``verdict.as_verdict``. It may also
  declare keyword parameters and gets them by name: ``prompt`` (the problem text) and any
  column of the data row (``def fn(completion, reference, *, prompt, tests): ...``), or
  ``**row`` for all of them (as TRL passes every column). The module is looked up on the
  Python path and then in the current folder, so ``rewards.fn=my_reward:score`` finds
  ``./my_reward.py``;
- a weighted sum of those, ``0.8*math+0.2*my_mod:fmt``: scores add with their weights (a
  missing weight is 1), ``acc`` comes from the first term, and any failed term fails the sum.
The same spec always returns the same object, so ``score_all`` reuses its worker processes.

How the row reaches a reward without widening the verifier interface: ``references`` turns
examples into ``RowReference`` values, strings equal to the reference answer that also carry
``prompt`` and ``columns``. Built-in verifiers read them as the plain answer string; a user
function's wrapper unpacks the names it declared. They cross to the scoring workers like
any string (pickled), so the worker's time and memory limits hold unchanged.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import cache, wraps
from typing import Any

from dapo_rl.data.files import MAX_COLUMN_CHARS
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


class RowReference(str):
    """A reference answer that also carries its row: ``prompt`` and ``columns``."""

    prompt: str
    columns: Mapping[str, Any]

    def __new__(cls, answer: str, prompt: str = "", columns: Mapping[str, Any] | None = None):
        self = super().__new__(cls, answer)
        self.prompt, self.columns = prompt, dict(columns or {})
        return self

    def __reduce__(self):  # pickled to the scoring workers with its row
        return (RowReference, (str(self), self.prompt, self.columns))


def references(examples: Sequence, n: int = 1) -> list[RowReference]:
    """Each example's reference with its row, repeated ``n`` times (one per completion)."""
    refs = [RowReference(ex.answer, ex.problem, getattr(ex, "columns", {})) for ex in examples]
    return [ref for ref in refs for _ in range(n)]


def _import(spec: str, module_name: str):
    """``module_name`` from the Python path, else from the current folder."""
    here = os.getcwd()
    for attempt in range(2):
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            top = error.name == module_name.split(".")[0]
            if top and attempt == 0 and here not in sys.path:
                sys.path.append(here)  # like `python -m`, but after every installed package
                continue
            where = f"; searched the Python path and the current folder {here}" if top else ""
            raise DapoError(
                f"verifier '{spec}': cannot import {module_name} ({error}){where}"
            ) from None
        except Exception as error:
            raise DapoError(f"verifier '{spec}': cannot import {module_name} ({error!r})") from None


def _row_params(fn: Callable) -> tuple[tuple[str, ...], bool]:
    """(names a user function takes from the row, whether it takes ``**row``)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: the two-argument form
        return (), False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    named = [p for p in params if p.kind in (*positional, inspect.Parameter.KEYWORD_ONLY)]
    extra = tuple(p.name for p in named[2:] if p.default is inspect.Parameter.empty)
    extra += tuple(p.name for p in named[2:] if p.default is not inspect.Parameter.empty)
    return extra, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def row_arguments(reference: str, names: Sequence[str], everything: bool) -> dict[str, Any]:
    """The keyword arguments a user function asked for, from a ``RowReference``'s row."""
    row = dict(getattr(reference, "columns", {}))
    row["prompt"] = getattr(reference, "prompt", "")
    if everything:
        return row
    missing = [n for n in names if n not in row]
    if missing:
        raise KeyError(f"the data row has no column {', '.join(missing)}")
    return {n: row[n] for n in names}


def _user_function(spec: str) -> Verifier:
    module_name, function_name = spec.split(":")
    module = _import(spec, module_name)
    fn = getattr(module, function_name, None)
    if not callable(fn):
        raise DapoError(f"verifier '{spec}': {module_name} has no function {function_name}")
    names, everything = _row_params(fn)

    @wraps(fn)
    def verifier(completion: str, reference: str) -> Verdict:
        kwargs = row_arguments(reference, names, everything) if names or everything else {}
        return as_verdict(fn(completion, str(reference), **kwargs))

    verifier.row_columns = tuple(n for n in names if n != "prompt")  # checked at load time
    return verifier


def check_columns(verifier: Callable, examples: Sequence, where: str) -> None:
    """DapoError when a reward asks for a column the data's first row does not have."""
    wanted = getattr(verifier, "row_columns", ())
    if not wanted or not examples:
        return
    have = getattr(examples[0], "columns", {})
    missing = [n for n in wanted if n not in have]
    if missing:
        present = ", ".join(have) or "none"
        raise DapoError(
            f"{where}: the reward takes column {', '.join(missing)}, which the data rows do "
            f"not have (columns: {present}; a column over {MAX_COLUMN_CHARS} characters of "
            "JSON is not kept)"
        )


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

    verifier.row_columns = tuple(
        dict.fromkeys(c for _, fn in terms for c in getattr(fn, "row_columns", ()))
    )
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
