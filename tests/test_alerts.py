"""Alert rules over synthetic metric streams: one stream per rule, and a healthy one."""

import dataclasses

import pytest

from dapo_rl.alerts import AlertThresholds, check_alerts

T = AlertThresholds()


def healthy(step: int) -> dict:
    """A step record of a run that learns steadily: nothing here should alert."""
    return {
        "step": step,
        "reward/mean": -0.5 + 0.02 * step,
        "acc/mean": 0.25 + 0.01 * step,
        "loss/policy": 0.01,
        "entropy/mean": 0.8 - 0.005 * step,  # slow, healthy decline
        "len/mean": 40.0 + 0.5 * step,
        "len/max": 64.0,
        "len/truncated_frac": 0.03,
        "ds/zero_var_frac": 0.3,
        "ds/all_correct_frac": 0.1,
        "ds/all_wrong_frac": 0.2,
        "grad/norm": 0.4,
        "grad/skipped_steps": 0,
        "clip/high_frac": 0.002,
    }


def stream(n: int, **changes) -> list[dict]:
    """n healthy records; ``changes`` maps a key to a function of the step."""
    records = [{"step": 0, "eval/acc": 0.2, "eval/n": 100}]  # step 0 holds only eval/*
    for step in range(1, n + 1):
        r = healthy(step)
        r.update({key: f(step) for key, f in changes.items()})
        records.append(r)
    return records


def alerts_over(records: list[dict], **kw) -> list[list[str]]:
    return [check_alerts(records[:i], r, thresholds=T, **kw) for i, r in enumerate(records)]


def last(records: list[dict]) -> list[str]:
    return check_alerts(records[:-1], records[-1], thresholds=T)


def test_healthy_stream_raises_nothing():
    assert all(a == [] for a in alerts_over(stream(40)))


def test_field_names_read_as_config_keys():
    names = {f.name for f in dataclasses.fields(AlertThresholds)}
    assert {"entropy_min", "zero_var_frac_max", "truncated_frac_max"} <= names


def test_entropy_below_minimum():
    (msg,) = last(stream(3, **{"entropy/mean": lambda s: 0.05}))
    assert "entropy collapsed to 0.05 (< 0.1)" in msg
    assert "algo.eps_high" in msg and "train.lr" in msg


def test_entropy_falling_fast_against_early_mean():
    # early mean (steps 1..5) = 0.8; 0.2 < 0.5 * 0.8, and 0.2 / 0.8 = 25%
    records = stream(12, **{"entropy/mean": lambda s: 0.8 if s <= 5 else 0.2})
    (msg,) = last(records)
    assert "entropy fell to 0.2, 25% of its early mean 0.8" in msg
    assert "algo.eps_high" in msg
    # quiet before the baseline exists, even at the same low value
    short = stream(3, **{"entropy/mean": lambda s: 0.8 if s <= 2 else 0.3})
    assert last(short) == []


def test_length_exploding_vs_early_mean():
    records = stream(12, **{"len/mean": lambda s: 40.0 if s <= 5 else 95.0})
    (msg,) = last(records)
    assert "len/mean 95 is 2.4x its early mean 40" in msg
    assert "algo.overlong_shaping" in msg and "rollout.max_new_tokens" in msg


def test_length_at_limit_with_truncation_rising():
    records = stream(
        12,
        **{
            "len/max": lambda s: 48.0 if s <= 5 else 64.0,
            "len/truncated_frac": lambda s: 0.02 if s <= 5 else 0.2,
        },
    )
    (msg,) = last(records)
    assert "len/max 64 is at the limit" in msg and "rose to 0.20 from 0.02" in msg
    assert "algo.overlong_filter" in msg


def test_truncation_dominating():
    (msg,) = last(stream(3, **{"len/truncated_frac": lambda s: 0.45}))
    assert "45% of completions hit the generation limit (> 30%)" in msg
    for key in ("algo.overlong_shaping", "algo.overlong_filter", "rollout.max_new_tokens"):
        assert key in msg


@pytest.mark.parametrize(
    ("right", "wrong", "advice"),
    [(0.6, 0.1, "use harder prompts"), (0.1, 0.6, "use easier prompts")],
)
def test_zero_variance_share(right, wrong, advice):
    changes = {
        "ds/zero_var_frac": lambda s: right + wrong,
        "ds/all_correct_frac": lambda s: right,
        "ds/all_wrong_frac": lambda s: wrong,
    }
    (msg,) = last(stream(3, **changes))
    assert "zero-variance groups are 70% of sampled groups (> 50%" in msg
    assert "algo.dynamic_sampling" in msg and advice in msg


def test_zero_variance_says_what_it_saw_and_suggests_the_score_for_partial_credit():
    # partial credit: all 8 groups had equal acc (every score > 0), 1 had equal scores
    changes = {
        "ds/zero_var_frac": lambda s: 1.0,
        "ds/equal_acc_frac": lambda s: 1.0,
        "ds/equal_score_frac": lambda s: 0.125,
        "ds/sampled_groups": lambda s: 8,
        "ds/all_correct_frac": lambda s: 1.0,
        "ds/all_wrong_frac": lambda s: 0.0,
    }
    (msg,) = last(stream(3, **changes))
    assert "8 of 8 sampled groups had equal acc" in msg
    assert "only 1 of 8 had equal verifier scores" in msg
    assert "algo.filter_metric=score" in msg and "harder prompts" not in msg
    # scores equal too: the usual advice, naming what was equal
    changes["ds/equal_score_frac"] = lambda s: 1.0
    (msg,) = last(stream(3, **changes))
    assert "8 of 8 sampled groups had equal acc" in msg and "use harder prompts" in msg
    assert "filter_metric" not in msg
    # filtering on the score: the share is the equal-score one
    changes["ds/zero_var_frac"] = changes["ds/equal_score_frac"] = lambda s: 0.75
    (msg,) = last(stream(3, **changes))
    assert "6 of 8 sampled groups had equal score" in msg


@pytest.mark.parametrize("bad", ["nan", "inf", float("nan"), float("-inf")])
def test_non_finite_loss_or_grad(bad):
    (msg,) = last(stream(3, **{"loss/policy": lambda s: bad}))
    assert "non-finite values: loss/policy=" in msg and "train.lr" in msg


def test_non_finite_reward_points_at_the_verifier():
    (msg,) = last(stream(3, **{"reward/mean": lambda s: "nan"}))
    assert "reward/mean=nan" in msg and "rewards.fn" in msg


def test_skipped_optimizer_steps():
    (msg,) = last(stream(3, **{"grad/skipped_steps": lambda s: 2}))
    assert msg.startswith("2 optimizer step(s) skipped") and "train.lr" in msg


def test_only_new_reports_a_persistent_condition_once():
    records = stream(10, **{"entropy/mean": lambda s: 0.05 if s >= 4 else 0.8})
    fired = [i for i, a in enumerate(alerts_over(records, only_new=True)) if a]
    assert fired == [4]
    assert sum(bool(a) for a in alerts_over(records)) == 7


def test_thresholds_are_honoured():
    records = stream(3, **{"ds/zero_var_frac": lambda s: 0.7})
    loose = dataclasses.replace(T, zero_var_frac_max=0.8)
    assert check_alerts(records[:-1], records[-1], thresholds=loose) == []
