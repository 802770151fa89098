"""Training-health alerts: pure rules over the stream of step records.

Owns the judgement "this run is going wrong, and here is the switch to try". Each rule is
a small function of the earlier records and the current one that returns one line naming
the symptom, its likely cause and the config key that addresses it, or None. Drift rules
compare against the *early baseline*: the mean of a metric over the first
``baseline_steps`` training records (eval-only records lack the key and are skipped), and
stay quiet until that many exist. Record values may be floats or the strings
"nan"/"inf" that ``metrics.jsonl`` uses for non-finite numbers.

Symptoms follow the DAPO paper (arXiv 2503.14476): entropy collapse (3.1, clip-higher),
zero-variance groups (3.2, dynamic sampling), overlong and truncated completions (3.4).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from dapo_rl.config import AlertsConfig
from dapo_rl.metrics import as_float

# Prefixes whose non-finite values mean the update itself is broken.
_FINITE_PREFIXES = ("loss/", "grad/", "reward/", "kl/", "adv/", "entropy/")


# The thresholds and their defaults live in the config (keys ``alerts.*``).
AlertThresholds = AlertsConfig


Rule = Callable[[list[dict], dict, AlertThresholds], str | None]


def _value(record: dict, key: str) -> float | None:
    return as_float(record[key]) if key in record else None


def _baseline(history: list[dict], key: str, n: int) -> float | None:
    """Mean of ``key`` over its first ``n`` finite values in history; None if fewer."""
    values = []
    for record in history:
        x = _value(record, key)
        if x is not None and math.isfinite(x):
            values.append(x)
            if len(values) == n:
                return sum(values) / n
    return None


def _entropy(history: list[dict], record: dict, t: AlertThresholds) -> str | None:
    h = _value(record, "entropy/mean")
    if h is None or not math.isfinite(h):
        return None
    fix = "raise algo.eps_high (clip-higher) or lower train.lr"
    if h < t.entropy_min:
        return (
            f"entropy collapsed to {h:.3g} (< {t.entropy_min:g}): policy is becoming "
            f"deterministic and stops exploring; {fix}"
        )
    base = _baseline(history, "entropy/mean", t.baseline_steps)
    if base and h < t.entropy_drop * base:
        return (
            f"entropy fell to {h:.3g}, {h / base:.0%} of its early mean {base:.3g} "
            f"(< {t.entropy_drop:.0%}): policy is collapsing towards deterministic; {fix}"
        )
    return None


def _length(history: list[dict], record: dict, t: AlertThresholds) -> str | None:
    mean, trunc = _value(record, "len/mean"), _value(record, "len/truncated_frac")
    if mean is None or not math.isfinite(mean):
        return None
    base = _baseline(history, "len/mean", t.baseline_steps)
    grown = base is not None and base > 0 and mean > t.len_growth * base
    # A truncated completion ran to the limit, so len/max at its run maximum with a
    # truncated share rising above baseline means lengths are piling up at the limit.
    top, longest = _value(record, "len/max"), [_value(r, "len/max") for r in history]
    at_limit = top is not None and all(x is None or top >= x for x in longest)
    trunc_base = _baseline(history, "len/truncated_frac", t.baseline_steps)
    rising = (
        at_limit
        and trunc is not None
        and trunc_base is not None
        and trunc >= trunc_base + t.truncated_rise
        and trunc <= t.truncated_frac_max  # above it, the truncation rule speaks
    )
    if not (grown or rising):
        return None
    parts = []
    if grown:
        parts.append(f"len/mean {mean:.3g} is {mean / base:.1f}x its early mean {base:.3g}")
    if rising:
        parts.append(
            f"len/max {top:.0f} is at the limit and the truncated share rose to {trunc:.2f} "
            f"from {trunc_base:.2f}"
        )
    return (
        f"completion length exploding: {'; '.join(parts)}: answers grow (often repetition "
        "loops) towards the generation limit; enable algo.overlong_shaping (soft length "
        "penalty) or algo.overlong_filter, or lower rollout.max_new_tokens"
    )


def _truncation(history: list[dict], record: dict, t: AlertThresholds) -> str | None:
    trunc = _value(record, "len/truncated_frac")
    if trunc is None or not trunc > t.truncated_frac_max:
        return None
    return (
        f"truncation dominates: {trunc:.0%} of completions hit the generation limit "
        f"(> {t.truncated_frac_max:.0%}): cut-off answers score as wrong and add reward "
        "noise; enable algo.overlong_filter (mask them from the loss) or "
        "algo.overlong_shaping, or raise rollout.max_new_tokens"
    )


def _seen_in(record: dict, frac: float) -> str:
    """A share of the sampled groups as "n of N" when the record counts them, else "x%"."""
    n = _value(record, "ds/sampled_groups")
    if n is None or not n > 0:
        return f"{frac:.0%}"
    return f"{round(frac * n):.0f} of {n:.0f}"


def _zero_variance(history: list[dict], record: dict, t: AlertThresholds) -> str | None:
    zv = _value(record, "ds/zero_var_frac")
    if zv is None or not zv > t.zero_var_frac_max:
        return None
    right = _value(record, "ds/all_correct_frac")
    wrong = _value(record, "ds/all_wrong_frac")
    eq_acc = _value(record, "ds/equal_acc_frac")
    eq_score = _value(record, "ds/equal_score_frac")
    # the filter's value: score when the zero-variance share is the equal-score share only
    metric = "score" if eq_score == zv and eq_acc is not None and eq_acc != zv else "acc"
    split, data = "", "make the data harder or easier"
    if right is not None and wrong is not None:
        split = f"; {right:.0%} all-correct, {wrong:.0%} all-wrong"
        data = "use harder prompts" if right >= wrong else "use easier prompts"
    seen = f"{_seen_in(record, zv)} sampled groups had equal {metric}"
    if metric == "acc" and eq_score is not None and eq_score < zv:
        # DAPO 3.2 on partial credit: every score > 0 counts as correct, so groups whose
        # rewards differ look all-correct and are dropped
        return (
            f"zero-variance groups: {seen} (> {t.zero_var_frac_max:.0%}{split}), but only "
            f"{_seen_in(record, eq_score)} had equal verifier scores: rewards vary within "
            "groups that dynamic sampling drops; for partial-credit rewards try "
            "algo.filter_metric=score"
        )
    return (
        f"zero-variance groups are {zv:.0%} of sampled groups (> {t.zero_var_frac_max:.0%}"
        f"{split}; {seen}): equal {metric} gives zero advantage and no gradient; "
        "algo.dynamic_sampling replaces them at a generation cost (capped by "
        f"algo.max_gen_rounds), or {data} (data.*)"
    )


def _non_finite(history: list[dict], record: dict, t: AlertThresholds) -> str | None:
    bad = []
    for key in record:
        x = _value(record, key) if key.startswith(_FINITE_PREFIXES) else None
        if x is not None and not math.isfinite(x):
            bad.append(f"{key}={x}")
    if not bad:
        return None
    if all(b.startswith("reward/") for b in bad):
        cause = "the verifier returns non-finite scores; check rewards.fn"
    else:
        cause = "the update diverged; lower train.lr or train.max_grad_norm"
    return f"non-finite values: {', '.join(bad)}: {cause}"


def _skipped(history: list[dict], record: dict, t: AlertThresholds) -> str | None:
    n = _value(record, "grad/skipped_steps")
    if n is None or not n > 0:
        return None
    return (
        f"{n:.0f} optimizer step(s) skipped for a non-finite gradient norm: the loss or "
        "its gradient overflowed; lower train.lr or train.max_grad_norm"
    )


RULES: tuple[Rule, ...] = (_non_finite, _skipped, _entropy, _length, _truncation, _zero_variance)


def check_alerts(
    history: list[dict],
    record: dict,
    *,
    thresholds: AlertThresholds,
    only_new: bool = False,
) -> list[str]:
    """One-line alerts for ``record`` given the earlier records ``history`` (oldest first).

    With ``only_new`` a rule speaks only at onset: when it was quiet for the previous
    record, so a persistent condition is reported once rather than every step.
    """
    out = []
    for rule in RULES:
        message = rule(history, record, thresholds)
        if message is None:
            continue
        if only_new and history and rule(history[:-1], history[-1], thresholds) is not None:
            continue
        out.append(message)
    return out
