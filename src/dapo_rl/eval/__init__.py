"""Held-out evaluation: greedy accuracy, avg@k, unbiased pass@k, maj@k, lengths, truncation.

Modules: ``core`` (the metrics of one policy on one list of examples), ``heldout`` (held-out
files: names, default verifiers, the in-training ``evaluate_sets`` and ``dapo eval``'s
``run_file``), ``table`` (console and markdown tables).
"""

from dapo_rl.eval.core import evaluate, maj_at_k, majority_index, pass_at_k
from dapo_rl.eval.heldout import (
    DEFAULT_VERIFIERS,
    EvalFile,
    default_verifier,
    eval_name,
    evaluate_sets,
    load_eval_files,
    load_policy,
    run_file,
)
from dapo_rl.eval.table import markdown_table, result_table

__all__ = [
    "DEFAULT_VERIFIERS",
    "EvalFile",
    "default_verifier",
    "eval_name",
    "evaluate",
    "evaluate_sets",
    "load_eval_files",
    "load_policy",
    "maj_at_k",
    "majority_index",
    "markdown_table",
    "pass_at_k",
    "result_table",
    "run_file",
]
