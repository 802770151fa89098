"""A verifier for loop tests with the random tiny model: right when the text length is even."""

from dapo_rl.rewards import Verdict


def length_parity(completion: str, reference: str) -> Verdict:
    right = len(completion) % 2 == 0
    return Verdict(1.0 if right else -1.0, right)
