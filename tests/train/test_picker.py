"""The prompt picker's bookkeeping and skip policy, without a model.

Hand-computed pieces (history update, skip probability, predicted zero-variance share,
explore-rate steps), then a synthetic policy: prompts with known pass rates p, so a group
of G is all correct with probability p^G and all wrong with (1 - p)^G, simulated over many
steps and compared with the skip rates the rule implies.
"""

from __future__ import annotations

import random

import pytest
import torch

from dapo_rl.config import build
from dapo_rl.data.files import Example
from dapo_rl.train.picker import (
    SKIP_BUDGET,
    PickerSettings,
    PromptPicker,
    PromptRecord,
    adapt_explore,
    predicted_zero_var,
    record_outcome,
    skip_probability,
)


def _settings(**overrides) -> PickerSettings:
    values = dict(
        group_size=4,
        carry_cap=3,
        predictive_skip=True,
        target=0.25,
        explore_init=0.5,
        explore_step=0.05,
        explore_min=0.05,
        retire_after=0,
    )
    return PickerSettings(**{**values, **overrides})


class CycleStream:
    """``problems`` in a fixed cycle; remembers every example handed out."""

    def __init__(self, problems):
        self.problems, self.position, self.handed = problems, 0, []

    def next(self, n):
        out = [
            Example(self.problems[(self.position + i) % len(self.problems)], "x", "")
            for i in range(n)
        ]
        self.position += n
        self.handed += [ex.problem for ex in out]
        return out


# --- hand-computed pieces --------------------------------------------------------------


def test_history_update_hand_computed():
    rec = PromptRecord()
    for acc in (1.0, 1.0, 0.5, 0.0, 0.0, 0.25):
        rec = record_outcome(rec, acc)
    # six groups; the last four accuracies; the 0.25 group ended the all-wrong run of 2
    assert rec == PromptRecord(seen=6, accs=(0.5, 0.0, 0.0, 0.25), easy_run=0, hard_run=0)
    rec = record_outcome(record_outcome(rec, 0.0), 0.0)
    assert (rec.easy_run, rec.hard_run) == (0, 2)
    rec = record_outcome(rec, 1.0)  # all correct: the wrong run ends, a correct run starts
    assert (rec.easy_run, rec.hard_run, rec.accs) == (1, 0, (0.25, 0.0, 0.0, 1.0))


def test_skip_probability_hand_computed():
    rates = {"explore_easy": 0.5, "explore_hard": 0.2, "floor": 0.001}
    assert skip_probability(PromptRecord(easy_run=2), **rates) == pytest.approx(0.75)  # 1-.5^2
    assert skip_probability(PromptRecord(hard_run=3), **rates) == pytest.approx(0.992)  # 1-.2^3
    assert skip_probability(PromptRecord(seen=5), **rates) == 0.0  # last group informative
    # never certain: the chance of sampling stays at the floor however long the run
    # (.2^5 = 0.00032 < 0.001)
    assert skip_probability(PromptRecord(hard_run=5), **rates) == pytest.approx(0.999)
    assert skip_probability(PromptRecord(easy_run=200), **rates) == pytest.approx(0.999)
    one = {"explore_easy": 0.1, "explore_hard": 1.0, "floor": 0.05}
    assert skip_probability(PromptRecord(hard_run=4), **one) == 0.0  # rate 1: never skipped
    # monotone in the run length
    probs = [skip_probability(PromptRecord(easy_run=k), **rates) for k in range(12)]
    assert probs == sorted(probs)


def test_predicted_zero_var_hand_computed():
    # G = 2, no history: uniform prior, P(both right) = 1/2 * 2/3 = 1/3, same for wrong
    assert predicted_zero_var(PromptRecord(), 2) == pytest.approx(2 / 3)
    # one all-correct group of 2: Beta(3, 1); right 3/4 * 4/5 = 0.6, wrong 1/4 * 2/5 = 0.1
    assert predicted_zero_var(PromptRecord(accs=(1.0,)), 2) == pytest.approx(0.7)
    # one half-right group: Beta(2, 2); right 2/4 * 3/5 = 0.3, wrong the same
    assert predicted_zero_var(PromptRecord(accs=(0.5,)), 2) == pytest.approx(0.6)


def test_explore_rate_moves_down_above_target_and_up_below_clipped():
    assert adapt_explore(0.5, 0.3, 0.125, step=0.05, low=0.05) == pytest.approx(0.45)
    assert adapt_explore(0.5, 0.1, 0.125, step=0.05, low=0.05) == pytest.approx(0.55)
    assert adapt_explore(0.06, 0.9, 0.125, step=0.05, low=0.05) == 0.05
    assert adapt_explore(0.98, 0.0, 0.125, step=0.05, low=0.05) == 1.0


def test_end_step_adapts_each_kind_toward_half_the_target():
    s = PromptPicker(_settings(), seed=0)
    s.begin_step()
    # 2 of 4 groups all correct (0.5 > 0.125): skip easy more; none all wrong: skip hard less
    s.end_step([("a", 1.0), ("b", 1.0), ("c", 0.5), ("d", 0.25)], [], 0)
    assert (s.explore_easy, s.explore_hard) == (pytest.approx(0.45), pytest.approx(0.55))
    off = PromptPicker(_settings(predictive_skip=False), seed=0)
    off.begin_step()
    off.end_step([("a", 1.0), ("b", 1.0)], [], 0)
    assert off.explore_easy == off.explore_hard == 0.5  # no skipping, no adaptation


# --- drawing -------------------------------------------------------------------------


def _seen(picker: PromptPicker, problem: str, *accs: float) -> None:
    rec = PromptRecord()
    for acc in accs:
        rec = record_outcome(rec, acc)
    picker.history[problem] = rec


def test_draw_passes_over_with_the_rule_and_never_skips_an_unknown_prompt():
    s = PromptPicker(_settings(), seed=0)
    s.explore_easy = 0.5
    _seen(s, "easy", 1.0, 1.0)  # skipped with probability 0.75
    s.begin_step()
    stream = CycleStream(["easy", "new"])
    out = s.draw(stream, 2000)
    handed_easy = stream.handed.count("easy")
    kept_easy = sum(ex.problem == "easy" for ex in out)
    assert stream.handed.count("new") == sum(ex.problem == "new" for ex in out)
    assert (handed_easy - kept_easy) / handed_easy == pytest.approx(0.75, abs=0.03)
    m = s.metrics()
    assert m["ds/skipped_prompts"] == handed_easy - kept_easy
    assert m["ds/seen_before_frac"] == pytest.approx(kept_easy / 2000)
    # Beta(1 + 8, 1) for G = 4: P(4 right) = 9/10 * 10/11 * 11/12 * 12/13 = 9/13
    p_right = 9 / 13
    p_wrong = 1 / 10 * 2 / 11 * 3 / 12 * 4 / 13
    assert m["ds/predicted_zero_var_frac"] == pytest.approx(p_right + p_wrong)


def test_skipping_is_bounded_then_takes_the_stream_as_it_comes():
    s = PromptPicker(_settings(explore_min=1e-9), seed=0)
    s.explore_easy = s.explore_hard = 1e-9  # every known prompt is skipped (almost) surely
    for p in "abc":
        _seen(s, p, 1.0, 1.0, 1.0)
    s.begin_step()
    stream = CycleStream(list("abc"))
    out = s.draw(stream, 3)
    assert len(out) == 3 and stream.position == 3 + SKIP_BUDGET * 3
    assert s.metrics()["ds/skipped_prompts"] == SKIP_BUDGET * 3


def test_retired_prompts_are_passed_over_until_they_fail():
    s = PromptPicker(_settings(predictive_skip=False, retire_after=2), seed=0)
    s.begin_step()
    s.end_step([("solved", 1.0), ("other", 0.5)], [], 0)
    assert s.retired == set()
    s.begin_step()
    s.end_step([("solved", 1.0)], [], 0)
    assert s.retired == {"solved"} and s.metrics()["ds/retired_prompts"] == 1
    s.begin_step()
    stream = CycleStream(["solved", "other"])
    assert [ex.problem for ex in s.draw(stream, 3)] == ["other"] * 3
    s.end_step([("solved", 0.75)], [], 0)  # drawn anyway (e.g. by the fallback) and missed
    assert s.retired == set()


def test_state_dict_round_trip_continues_with_the_same_draws():
    a = PromptPicker(_settings(), seed=3)
    a.begin_step()
    a.end_step([("x", 1.0), ("y", 0.0), ("z", 0.5)], ["part"], 1)
    state = a.state_dict()
    b = PromptPicker(_settings(), seed=99)
    b.load_state_dict(state)
    problems = ["x", "y", "z", "w"]
    for s in (a, b):
        assert s.begin_step() == (["part"], 1)
    draws = [[ex.problem for ex in s.draw(CycleStream(problems), 50)] for s in (a, b)]
    assert draws[0] == draws[1]
    assert a.history == b.history and a.metrics() == b.metrics()


def test_carried_groups_last_one_step_and_are_capped():
    s = PromptPicker(_settings(carry_cap=2), seed=0)
    s.begin_step()
    s.end_step([], ["two groups"], 2)
    assert s.begin_step() == (["two groups"], 2)  # the next step takes them
    assert s.metrics()["ds/carried_groups"] == 2
    s.end_step([], [], 0)
    assert s.begin_step() == ([], 0)  # taken once only
    s.end_step([], ["old"], 1)
    s.steps += 1  # a step went by without taking them: older than one step
    assert s.begin_step() == ([], 0)
    with pytest.raises(ValueError, match="cap 2"):
        s.end_step([], ["three"], 3)


def test_settings_follow_the_config():
    assert PickerSettings.from_config(build()).carry_cap == 0  # off by default
    on = {"rollout.prompts_per_step": 4, "algo.carry_over": True}
    s = PickerSettings.from_config(build(overrides=on))
    assert s.carry_cap == 3 and not s.predictive_skip and s.retire_after == 0
    off = build(overrides={"algo.carry_over": False})
    assert PickerSettings.from_config(off).carry_cap == 0
    no_ds = build(overrides={"algo.dynamic_sampling": False})
    assert PickerSettings.from_config(no_ds).carry_cap == 0


# --- a synthetic policy ----------------------------------------------------------------

G = 4
CLASSES = {"easy": 0.8, "hard": 0.25, "mixed": 0.5}  # pass rate of each prompt class


def _simulate(picker: PromptPicker, classes: dict, steps: int, per_step: int, per_class: int = 20):
    """Run ``steps`` steps of ``per_step`` prompts with outcomes drawn from the pass rates.

    Returns per class (prompts handed out by the stream, prompts passed over) and the
    (zero-variance, total) counts of the groups generated.
    """
    rng = random.Random(7)
    problems = [f"{c} {i}" for i in range(per_class) for c in classes]
    stream = CycleStream(problems)
    handed = dict.fromkeys(classes, 0)
    generated = dict.fromkeys(classes, 0)
    zero_var = 0
    for _ in range(steps):
        picker.begin_step()
        start = len(stream.handed)
        out = picker.draw(stream, per_step)
        for problem in stream.handed[start:]:
            handed[problem.split()[0]] += 1
        outcomes = []
        for ex in out:
            kind = ex.problem.split()[0]
            generated[kind] += 1
            right = sum(rng.random() < classes[kind] for _ in range(G))
            zero_var += right in (0, G)
            outcomes.append((ex.problem, right / G))
        picker.end_step(outcomes, [], 0)
    skipped = {k: handed[k] - generated[k] for k in classes}
    return handed, skipped, zero_var, sum(generated.values())


def _expected_skip_rate(p: float, e_easy: float, e_hard: float, low: float, depth=60) -> float:
    """The long-run share of a prompt's draws that are passed over, from the rule alone.

    States at a draw: no run, or a run of k all-correct (all-wrong) groups. A prompt in a
    run of k is sampled with probability max(e^k, low) (else it stays put); sampling it
    moves it to
    the next state with the group probabilities p^G, (1-p)^G and the rest. The chain of the
    states at sampling times has a stationary law nu; a visit to state s lasts 1/e_s draws
    on average, of which all but one are skips.
    """
    a, b = p**G, (1 - p) ** G
    n = 1 + 2 * depth  # 0: no run; 1..depth: easy run k; depth+1..: hard run k
    move = torch.zeros(n, n, dtype=torch.float64)
    for s in range(n):
        easy_k = s if 1 <= s <= depth else 0
        hard_k = s - depth if s > depth else 0
        move[s, min(easy_k + 1, depth)] += a
        move[s, depth + min(hard_k + 1, depth)] += b
        move[s, 0] += 1 - a - b
    nu = torch.full((n,), 1 / n, dtype=torch.float64)
    for _ in range(5000):
        nu = nu @ move
    k = torch.tensor([0] + list(range(1, depth + 1)) * 2, dtype=torch.float64)
    e = torch.tensor([1.0] + [e_easy] * depth + [e_hard] * depth, dtype=torch.float64)
    draws = nu / (e**k).clamp(min=low)  # expected draws per visit, weighted by visits
    return float(1 - nu.sum() / draws.sum())


def test_synthetic_policy_skip_rates_match_the_rule():
    # fixed explore rates (no adaptation), low enough that easy and hard prompts get skipped
    e_easy, e_hard, low = 0.7, 0.6, 0.05
    s = PromptPicker(_settings(explore_step=0.0, explore_min=low), seed=0)
    s.explore_easy, s.explore_hard = e_easy, e_hard
    handed, skipped, _, _ = _simulate(s, CLASSES, steps=3000, per_step=6)
    expected = {kind: _expected_skip_rate(p, e_easy, e_hard, low) for kind, p in CLASSES.items()}
    for kind in CLASSES:
        observed = skipped[kind] / handed[kind]
        assert observed == pytest.approx(expected[kind], abs=0.02), (kind, observed, expected)
    # the classes really differ: easy and hard prompts are skipped far more than mixed ones
    assert expected["easy"] > 0.25 and expected["hard"] > 0.2 and expected["mixed"] < 0.1


def test_synthetic_policy_adaptive_skipping_lowers_the_zero_variance_share():
    # a population where zero-variance groups dominate: (0.9^4 + 0.9^4 + 2 * 0.5^4) / 3
    # = 0.48 of the groups of plain sampling
    classes = {"easy": 0.9, "hard": 0.1, "mixed": 0.5}
    plain = PromptPicker(_settings(predictive_skip=False), seed=0)
    _, skipped, zv_plain, n_plain = _simulate(plain, classes, steps=800, per_step=6)
    assert sum(skipped.values()) == 0
    adaptive = PromptPicker(_settings(), seed=0)
    _, skipped, zv_skip, n_skip = _simulate(adaptive, classes, steps=800, per_step=6)
    assert n_plain == n_skip  # the same number of groups generated either way
    assert zv_plain / n_plain == pytest.approx(0.48, abs=0.03)
    assert zv_skip / n_skip < zv_plain / n_plain - 0.15
    # the skips fall mostly on the easy and hard prompts (a mixed prompt is skipped only
    # after an unlucky zero-variance group, 1 in 8)
    assert min(skipped["easy"], skipped["hard"]) > 1.5 * skipped["mixed"]
    # both explore rates were pushed down: each kind was above its target share (0.125)
    assert adaptive.explore_easy < 0.5 and adaptive.explore_hard < 0.5
