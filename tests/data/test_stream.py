"""The prompt stream: seeded order, exact resume, epochs over a finite list, exclusions."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from dapo_rl.data.arithmetic import Arithmetic
from dapo_rl.data.files import Example
from dapo_rl.data.stream import PromptStream

EXAMPLES = [Example(f"problem {i}", str(i), str(i)) for i in range(7)]


def sources():
    return [Arithmetic(1, 99, 3, "+-*"), list(EXAMPLES)]


def problems(batch):
    return [e.problem for e in batch]


@pytest.mark.parametrize("source", sources(), ids=["arithmetic", "list"])
def test_deterministic_for_a_seed_and_different_for_another(source):
    a = PromptStream(source, seed=1)
    b = PromptStream(source, seed=1)
    c = PromptStream(source, seed=2)
    first = a.next(7)
    assert first == b.next(7)
    assert problems(first) != problems(c.next(7))


@pytest.mark.parametrize("source", sources(), ids=["arithmetic", "list"])
@pytest.mark.parametrize("cut", [0, 3, 7, 9, 16])  # 7 and 16 fall on/after epoch ends (7 rows)
def test_resume_is_exact(source, cut):
    whole = PromptStream(source, seed=3)
    reference = whole.next(cut) + whole.next(12)

    before = PromptStream(source, seed=3)
    before.next(cut)
    state = json.loads(json.dumps(before.state_dict()))  # survives a checkpoint file
    after = PromptStream(source, seed=3)
    after.load_state_dict(state)
    assert after.next(12) == reference[cut:]
    assert after.position == before.position + 12


def test_resume_after_many_small_calls_equals_one_large_call():
    a, b = PromptStream(list(EXAMPLES), seed=0), PromptStream(list(EXAMPLES), seed=0)
    small = [ex for _ in range(10) for ex in a.next(2)]
    assert small == b.next(20)


def test_arithmetic_stream_is_the_task_sequence():
    task = Arithmetic()
    assert PromptStream(task, seed=4).next(5) == [task.example(4, i) for i in range(5)]


def test_finite_list_wraps_with_a_new_permutation_each_epoch():
    s = PromptStream(list(EXAMPLES), seed=0)
    epochs = [s.next(7) for _ in range(4)]
    for epoch in epochs:
        assert Counter(problems(epoch)) == Counter(problems(EXAMPLES))  # each exactly once
    # orders differ between epochs (7! = 5040 orders; fixed seed, so this is not flaky)
    assert len({tuple(problems(e)) for e in epochs}) == 4
    assert s.epoch == 4 and s.position == 28


def test_epochs_straddling_a_call_still_hold_each_example_once():
    s = PromptStream(list(EXAMPLES), seed=9)
    out = s.next(5) + s.next(5) + s.next(4)  # 14 rows = two epochs of 7
    assert Counter(problems(out[:7])) == Counter(problems(EXAMPLES))
    assert Counter(problems(out[7:])) == Counter(problems(EXAMPLES))


def test_epoch_counter():
    s = PromptStream(list(EXAMPLES), seed=0)
    assert s.epoch == 0
    s.next(6)
    assert s.epoch == 0
    s.next(1)
    assert s.epoch == 1
    assert PromptStream(Arithmetic(), seed=0).epoch == 0


@pytest.mark.parametrize("source", sources(), ids=["arithmetic", "list"])
def test_excluded_problems_never_appear(source):
    if isinstance(source, list):
        exclude = {"problem 1", "problem 4", "problem 6"}
    else:
        exclude = {e.problem for e in source.held_out(0, 300)}
    s = PromptStream(source, seed=0, exclude=exclude)
    out = s.next(40)
    assert len(out) == 40
    assert not set(problems(out)) & exclude
    if isinstance(source, list):
        # 4 rows remain; 40 of them = 10 epochs, each remaining row 10 times
        assert Counter(problems(out)) == {f"problem {i}": 10 for i in (0, 2, 3, 5)}


def test_exclude_covering_a_finite_list_raises():
    s = PromptStream(list(EXAMPLES), seed=0, exclude={e.problem for e in EXAMPLES})
    with pytest.raises(ValueError, match="every training problem is in the held-out set"):
        s.next(2)


def test_exclude_covering_the_arithmetic_space_raises():
    # operands in {1}, two terms, '+': the only problem is "What is 1 + 1?"
    task = Arithmetic(1, 1, 2, "+")
    s = PromptStream(task, seed=0, exclude={e.problem for e in task.held_out(0, 5)})
    with pytest.raises(ValueError, match="every training problem"):
        s.next(1)


def test_empty_list_is_rejected():
    with pytest.raises(ValueError, match="empty training set"):
        PromptStream([], seed=0)


def test_next_zero_is_empty_and_keeps_the_position():
    s = PromptStream(list(EXAMPLES), seed=0)
    assert s.next(0) == [] and s.position == 0
