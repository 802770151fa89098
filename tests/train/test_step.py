"""Steps 1-5 (collect) with a scripted engine: dynamic sampling, refill, round cap, shaping."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

from dapo_rl.config import build
from dapo_rl.data.files import Example
from dapo_rl.data.stream import PromptStream
from dapo_rl.rewards import Verdict
from dapo_rl.rollout import Rollout
from dapo_rl.train.picker import PickerSettings, PromptPicker
from dapo_rl.train.step import CollectStats, collect

G = 4


class ScriptedEngine:
    """Completions decided by the problem text: 'easy' all right, 'hard' all wrong,
    'mixed' right on even rows; 'long' completions run to the limit without EOS."""

    pad_id = 0

    def __init__(self):
        self.calls = []

    def generate(self, prompts, *, n, max_new_tokens, **_):
        self.calls.append(len(prompts))
        rows = []
        for p in prompts:
            for j in range(n):
                if "easy" in p or ("mixed" in p and j % 2 == 0):
                    rows.append((1, 2))  # token 1 = "right", length 2
                else:
                    rows.append((2, max_new_tokens if "long" in p else 3))
        tc = max(length for _, length in rows)
        ids = torch.zeros(len(rows), tc, dtype=torch.long)
        mask = torch.zeros(len(rows), tc, dtype=torch.long)
        for i, (tok, length) in enumerate(rows):
            ids[i, :length], mask[i, :length] = tok, 1
        lengths = mask.sum(1)
        return Rollout(
            torch.ones(len(rows), 1, dtype=torch.long),
            torch.ones(len(rows), 1, dtype=torch.long),
            ids,
            mask,
            -mask.float(),
            lengths,
            lengths == max_new_tokens,
        )


class Tok:
    chat_template = None

    def batch_decode(self, seqs, skip_special_tokens=True):
        return ["right" if int(s[0]) == 1 else "wrong" for s in seqs]


def verifier(text, ref):
    return Verdict(1.0 if text == "right" else -1.0, text == "right")


def _state(problems, **overrides):
    cfg = build(
        overrides={
            "rollout.group_size": G,
            "rollout.prompts_per_step": 2,
            "rollout.max_new_tokens": 8,
            "algo.overlong_buffer": 4,
            **overrides,
        }
    )
    stream = PromptStream([Example(p, "x", str(i)) for i, p in enumerate(problems)], seed=0)
    stream._at = lambda i: Example(problems[i % len(problems)], "x", str(i))  # fixed order
    return SimpleNamespace(
        cfg=cfg,
        stream=stream,
        tokenizer=Tok(),
        engine=ScriptedEngine(),
        verifier=verifier,
        generator=None,
        picker=PromptPicker(PickerSettings.from_config(cfg), seed=0),
    )


def test_dynamic_sampling_drops_zero_variance_groups_and_refills_only_what_is_missing():
    st = _state(["easy", "mixed a", "hard", "mixed b", "mixed c"])
    col = collect(st)
    # round 1: easy (dropped), mixed a (kept); round 2 asks for 1: hard (dropped);
    # round 3 asks for 1: mixed b (kept)
    assert st.engine.calls == [2, 1, 1]
    assert isinstance(col.stats, CollectStats) and col.stats.rounds == 3
    assert len(col.batch) == 2 * G
    assert col.acc.view(2, G).tolist() == [[1, 0, 1, 0], [1, 0, 1, 0]]
    assert col.stats.all_correct == 1 and col.stats.all_wrong == 1 and col.stats.groups == 4
    # the policy's own accuracy is measured on everything generated: 2 + 0 + 2 + 4 of 16
    assert float(col.stats.accs.mean()) == pytest.approx(8 / 16)


def test_round_cap_trains_on_what_it_has_and_warns():
    st = _state(["mixed a", "hard", "hard", "hard"], **{"algo.max_gen_rounds": 3})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        col = collect(st)
    # round 1: mixed a kept, hard dropped; rounds 2 and 3 ask for 1 and get hard, hard
    assert st.engine.calls == [2, 1, 1]
    assert len(col.batch) == G  # one informative group found in three rounds
    assert any("1/2 informative groups" in str(w.message) for w in caught)


def test_no_informative_group_gives_no_batch():
    st = _state(["hard"], **{"algo.max_gen_rounds": 2})
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        col = collect(st)
    assert col.batch is None and col.stats.rounds == 2


def test_without_dynamic_sampling_every_group_is_kept_in_one_round():
    st = _state(["easy", "hard"], **{"algo.dynamic_sampling": False})
    col = collect(st)
    assert st.engine.calls == [2] and len(col.batch) == 2 * G


def test_the_share_of_trained_groups_without_variance_is_zero_only_with_dynamic_sampling():
    from dapo_rl.train.step import _rollout_metrics

    st = _state(["easy", "mixed a"], **{"algo.dynamic_sampling": False})
    m = _rollout_metrics(collect(st), st.cfg)
    assert m["ds/trained_zero_var_frac"] == 0.5  # 'easy' is trained on and carries nothing
    st = _state(["easy", "mixed a", "hard", "mixed b"])
    m = _rollout_metrics(collect(st), st.cfg)
    assert m["ds/zero_var_frac"] == 0.5 and m["ds/trained_zero_var_frac"] == 0.0


def test_overlong_shaping_adds_the_length_penalty_but_filtering_uses_raw_accuracy():
    # 'long mixed': wrong rows run to 8 tokens = max_new_tokens: penalty -1 (buffer 4)
    st = _state(["long mixed", "mixed"])
    col = collect(st)
    r = col.rewards.view(2, G)
    assert r[0].tolist() == [1.0, -2.0, 1.0, -2.0]  # score -1 + penalty -1 on truncated rows
    assert r[1].tolist() == [1.0, -1.0, 1.0, -1.0]  # length 3 <= 8 - 4: no penalty
    assert col.batch.truncated.view(2, G)[0].tolist() == [False, True, False, True]
    st = _state(["long mixed", "mixed"], **{"algo.overlong_shaping": False})
    assert collect(st).rewards.view(2, G)[0].tolist() == [1.0, -1.0, 1.0, -1.0]


def test_all_wrong_groups_with_different_lengths_are_still_dropped():
    # shaped rewards differ inside the group (one truncated), raw accuracy does not
    st = _state(["long hard", "mixed", "mixed"], **{"rollout.prompts_per_step": 1})
    col = collect(st)
    assert st.engine.calls == [1, 1] and col.acc.tolist() == [1, 0, 1, 0]


def test_oversampling_requests_missing_over_pass_rate_and_records_the_new_rate():
    st = _state(["mixed a", "hard", "mixed b", "hard", "mixed c", "hard"])
    st.picker.pass_rate = 0.5  # last step kept half its groups: ask for 2 / 0.5 = 4 prompts
    col = collect(st)
    assert st.engine.calls == [4]
    assert len(col.batch) == 2 * G  # two of the four groups were informative
    assert st.picker.pass_rate == 0.5
    st = _state(["hard"] * 3 + ["mixed"], **{"rollout.batch_size": 12})
    st.picker.pass_rate = 0.01  # capped: at most batch_size / G = 3 prompts a round
    collect(st)
    assert st.engine.calls[0] == 3
    st = _state(["mixed a", "hard"], **{"algo.oversample": False})
    st.picker.pass_rate = 0.5
    collect(st)
    assert st.engine.calls[0] == 2


def test_surplus_groups_are_carried_and_trained_first_by_the_next_step():
    problems = ["mixed a", "mixed b", "long mixed c", "mixed d", "mixed e"]
    st = _state(problems, **{"algo.carry_over": True})
    st.picker.pass_rate = 0.5  # ask for 2 / 0.5 = 4 prompts: all 4 informative
    first = collect(st)
    assert len(first.batch) == 2 * G and first.stats.picker["ds/carried_groups"] == 0
    # two surplus groups; at most prompts_per_step - 1 = 1 is carried: 'long mixed c'
    second = collect(st)
    assert st.engine.calls == [4, 1]  # one group missing, pass rate now 4/4: one prompt
    assert second.stats.picker["ds/carried_groups"] == 1
    assert second.stats.kept_groups == 2 and second.stats.groups == 1
    # the carried group comes first, with its own rewards (truncated rows penalised)
    assert second.batch.truncated.view(2, G).tolist() == [[False, True, False, True], [False] * G]
    assert second.rewards.view(2, G)[0].tolist() == [1.0, -2.0, 1.0, -2.0]
    assert st.picker.pass_rate == 1.0  # of the groups generated this step, carried ones aside
    st = _state(problems, **{"algo.carry_over": False})
    st.picker.pass_rate = 0.5
    collect(st), collect(st)
    assert st.engine.calls == [4, 2]  # the surplus was dropped


def test_predictive_skip_passes_over_a_prompt_that_gave_a_zero_variance_group():
    # explore rates at 1e-6: a prompt after one zero-variance group is skipped (almost) surely
    rare = {"algo.skip_explore_init": 1e-6, "algo.skip_explore_min": 1e-6}
    st = _state(
        ["easy", "mixed a", "mixed b"],
        **{"algo.predictive_skip": True, "algo.oversample": False, **rare},
    )
    collect(st)  # easy (dropped), mixed a; then mixed b
    second = collect(st)
    assert st.engine.calls == [2, 1, 2]  # easy passed over: mixed a, mixed b
    m = second.stats.picker
    assert m["ds/skipped_prompts"] == 1 and m["ds/seen_before_frac"] == 1.0
    # both sampled prompts had one half-right group of 4: Beta(3, 3);
    # P(4 right) = 3/6 * 4/7 * 5/8 * 6/9, P(4 wrong) the same
    assert m["ds/predicted_zero_var_frac"] == pytest.approx(2 * 360 / 3024)
    assert st.picker.history["easy"].easy_run == 1
    assert st.picker.history["mixed a"].seen == 2


def partial_credit(text, ref):
    """A float reward in (0, 1]: acc = score > 0 is True for every completion."""
    return 1.0 if text == "right" else 0.25


def test_partial_credit_groups_are_kept_when_filtering_on_the_score():
    # every completion scores > 0, so every group is all-"correct" by acc and dynamic
    # sampling on acc drops them all, round after round; on the score the mixed ones stay
    st = _state(["mixed a", "easy", "mixed b"], **{"algo.max_gen_rounds": 2})
    st.verifier = partial_credit
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        col = collect(st)
    assert col.batch is None and col.stats.rounds == 2
    st = _state(["mixed a", "easy", "mixed b"], **{"algo.filter_metric": "score"})
    st.verifier = partial_credit
    col = collect(st)
    assert st.engine.calls == [2, 1]  # mixed a kept, easy (all 1.0) dropped, then mixed b
    assert col.rewards.view(2, G).tolist() == [[1.0, 0.25, 1.0, 0.25]] * 2
    assert col.acc.bool().all()


def test_zero_variance_metrics_count_equal_acc_and_equal_score_groups():
    from dapo_rl.train.step import _rollout_metrics

    # round 1: mixed a (scores vary, acc all True), easy (scores and acc equal)
    st = _state(["mixed a", "easy", "mixed b"], **{"algo.max_gen_rounds": 1})
    st.verifier = partial_credit
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        m = _rollout_metrics(collect(st), st.cfg)
    assert m["ds/sampled_groups"] == 2
    assert m["ds/equal_acc_frac"] == 1.0 and m["ds/equal_score_frac"] == 0.5
    assert m["ds/zero_var_frac"] == 1.0  # the filter's metric: acc
    # on the score: mixed a, easy (dropped), then mixed a again: 1 of 3 groups equal
    st = _state(["mixed a", "easy"], **{"algo.filter_metric": "score"})
    st.verifier = partial_credit
    m = _rollout_metrics(collect(st), st.cfg)
    assert m["ds/sampled_groups"] == 3 and m["ds/equal_acc_frac"] == 1.0
    assert m["ds/zero_var_frac"] == pytest.approx(1 / 3)
