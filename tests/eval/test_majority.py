"""maj@k: majority voting over extracted answers, ties to the first seen, hand-computed."""

from __future__ import annotations

import pytest
import torch

from dapo_rl.eval import maj_at_k, majority_index
from dapo_rl.rewards import extract_answer


@pytest.mark.parametrize(
    "answers, expected",
    [
        (["4", "5", "4"], 0),  # 4 has two votes; its first sample is 0
        (["5", "4", "4"], 1),  # 4 wins; its first sample is 1
        (["5", "4"], 0),  # tie 1-1: the answer seen first (5) wins
        (["5", "4", None, "4", "5"], 0),  # tie 2-2: 5 came first; None does not vote
        ([None, None, "3"], 2),  # the only answer wins
        ([None, None], None),  # nobody answered
        ([], None),
    ],
)
def test_majority_index(answers, expected):
    assert majority_index(answers) == expected


def test_maj_at_k_scores_the_first_sample_of_the_majority_answer():
    answers = [
        ["4", "5", "4"],  # reference 4: majority 4 -> sample 0, correct -> hit
        ["5", "7", "7"],  # reference 7: majority 7 -> sample 1, correct -> hit
        ["5", "7", None],  # reference 7: tie 1-1, 5 first -> sample 0, wrong -> miss
        [None, None, None],  # no answer -> miss
    ]
    acc = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert maj_at_k(answers, acc) == 2 / 4


@pytest.mark.parametrize(
    "completion, verifier, expected",
    [
        # dapo_answer: the last Answer: line, normalised; numbers by value
        ("3 + 1 = 4\nAnswer: $4$", "dapo_answer", "4"),
        ("Answer: 4.", "dapo_answer", "4"),
        ("Answer: 04.0", "dapo_answer", "4"),
        ("Answer: 3\nsorry, Answer: 5 cm", "dapo_answer", "5"),
        ("the answer is \\boxed{4}", "dapo_answer", None),  # dapo reads Answer: lines only
        ("Answer:   ", "dapo_answer", None),
        # gsm8k: the number the verifier reads, as an exact fraction
        ("So 1,000 pens.\n#### 1,000", "gsm8k", "1000"),
        ("Answer: 72.0", "gsm8k", "72"),
        ("Answer: 5 + 3 = 8", "gsm8k", "8"),
        ("it costs $0.50 each", "gsm8k", "1/2"),
        ("Answer: Sara", "gsm8k", "Sara"),  # no number: the marked answer
        ("no idea", "gsm8k", None),
        # math (and any other spec): the later of \boxed{} and Answer:, normalised
        ("so \\boxed{\\dfrac{1}{2}}", "math", "\\frac{1}{2}"),
        ("\\boxed{3}\nAnswer: 4", "math", "4"),
        ("Answer: \\frac12", "math", "\\frac{1}{2}"),
        ("nothing marked 42", "math", None),
        ("Answer: 7", "0.8*dapo_answer+0.2*math", "7"),  # the first term decides
        ("\\boxed{7}", "mymod:check", "7"),
    ],
)
def test_extract_answer(completion, verifier, expected):
    assert extract_answer(completion, verifier) == expected


def test_equal_answers_written_differently_vote_together():
    texts = ["Answer: 1,000", "Answer: 999", "Answer: 1000.0"]
    keys = [extract_answer(t, "gsm8k") for t in texts]
    assert keys == ["1000", "999", "1000"]
    assert majority_index(keys) == 0
