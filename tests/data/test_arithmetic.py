"""The built-in arithmetic task: seeded problems, correct answers, the held-out set."""

from __future__ import annotations

import re

import pytest

from dapo_rl.data.arithmetic import Arithmetic
from dapo_rl.data.files import Example

_PROBLEM = re.compile(r"What is (.+)\?")


def terms_and_ops(problem: str) -> tuple[list[int], list[str]]:
    tokens = _PROBLEM.fullmatch(problem).group(1).split(" ")
    return [int(t) for t in tokens[0::2]], tokens[1::2]


def evaluate(problem: str) -> int:
    """Independent evaluator: '*' binds tighter than '+' and '-', both left-associative."""
    terms, ops = terms_and_ops(problem)
    products = [terms[0]]  # running products, joined by the + / - in `signs`
    signs = []
    for op, t in zip(ops, terms[1:], strict=True):
        if op == "*":
            products[-1] *= t
        else:
            signs.append(op)
            products.append(t)
    total = products[0]
    for op, p in zip(signs, products[1:], strict=True):
        total = total + p if op == "+" else total - p
    return total


@pytest.mark.parametrize(
    "task, seed, index, problem, answer",
    [
        # 19 + 19 = 38
        (Arithmetic(), 0, 0, "What is 19 + 19?", "38"),
        # 7 + 7 = 14
        (Arithmetic(), 0, 1, "What is 7 + 7?", "14"),
        # product first: 1 * 7 * 6 = 42
        (Arithmetic(1, 9, 3, "+-*"), 7, 0, "What is 1 * 7 * 6?", "42"),
        # left to right: (2 - 1) - 3 = -2, a negative answer
        (Arithmetic(1, 9, 3, "+-*"), 7, 1, "What is 2 - 1 - 3?", "-2"),
        # precedence: 6 * 3 + 1 = 18 + 1 = 19 (not 6 * 4 = 24)
        (Arithmetic(1, 9, 3, "+-*"), 7, 3, "What is 6 * 3 + 1?", "19"),
        # 7 * 3 - 8 = 21 - 8 = 13
        (Arithmetic(1, 9, 3, "+-*"), 7, 4, "What is 7 * 3 - 8?", "13"),
    ],
)
def test_hand_examples(task, seed, index, problem, answer):
    ex = task.example(seed, index)
    assert ex == Example(
        problem=problem, answer=answer, id=f"arith-{seed}-{index}", template="dapo_oneshot"
    )
    assert int(ex.answer) == evaluate(ex.problem)


def test_deterministic_and_seed_dependent():
    task = Arithmetic(1, 50, 3, "+-*")
    first = [task.example(3, i) for i in range(30)]
    assert first == [task.example(3, i) for i in range(30)]
    # the same index out of order gives the same problem: a pure function of (seed, index)
    assert task.example(3, 17) == first[17]
    other = [task.example(4, i) for i in range(30)]
    assert [e.problem for e in first] != [e.problem for e in other]


@pytest.mark.parametrize(
    "task",
    [
        Arithmetic(),
        Arithmetic(5, 7, 2, "-"),
        Arithmetic(1, 3, 4, "*"),
        Arithmetic(10, 99, 5, "+-*"),
        Arithmetic(1, 1, 3, "+-"),
    ],
    ids=repr,
)
def test_answers_and_parameters(task):
    seen_ops = set()
    for i in range(200):
        ex = task.example(1, i)
        terms, ops = terms_and_ops(ex.problem)
        assert len(terms) == task.num_terms
        assert all(task.min_value <= t <= task.max_value for t in terms)
        assert set(ops) <= set(task.ops)
        assert int(ex.answer) == evaluate(ex.problem)
        assert ex.answer == str(int(ex.answer))  # a plain integer, no "+" or ".0"
        seen_ops |= set(ops)
    assert seen_ops == set(task.ops)  # every allowed operator is drawn


def test_held_out_is_distinct_and_sized():
    task = Arithmetic()
    held = task.held_out(0, 50)
    assert len(held) == 50
    assert len({e.problem for e in held}) == 50
    assert [e.id for e in held] == [f"arith-eval-{i}" for i in range(50)]
    assert all(int(e.answer) == evaluate(e.problem) for e in held)
    assert held == task.held_out(0, 50)  # deterministic
    assert task.held_out(0, 10) == held[:10]  # a prefix of a larger set


def test_held_out_small_space_gives_every_problem_once():
    # operands in {1, 2}, two terms, '+': 2 * 2 = 4 problems: 1+1, 1+2, 2+1, 2+2
    held = Arithmetic(1, 2, 2, "+").held_out(0, 10)
    assert sorted(e.problem for e in held) == [
        "What is 1 + 1?",
        "What is 1 + 2?",
        "What is 2 + 1?",
        "What is 2 + 2?",
    ]
    # 3 operands x 3 operands x 2 operators = 18 problems
    assert len(Arithmetic(1, 3, 2, "+*").held_out(0, 100)) == 18


def test_held_out_draws_from_another_seed_space_than_training():
    task = Arithmetic(1, 1000, 3, "+-*")
    held = task.held_out(5, 20)
    train = [task.example(5, i) for i in range(2000)]
    # a large problem space (1000^3 * 9): the training stream of the same seed does not
    # reproduce the held-out sequence, and in practice shares none of its problems
    assert not {e.problem for e in held} & {e.problem for e in train}
    assert [e.problem for e in held] != [e.problem for e in train[:20]]
    # held-out sets of different seeds differ too
    assert [e.problem for e in held] != [e.problem for e in task.held_out(6, 20)]
