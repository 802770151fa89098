"""Time the built-in verifiers on hostile references and the cost of each way to bound them.

    python benchmarks/verifier_timing.py [--sizes 5000,20000,50000] [--reps 20]

Part 1, parse time: each hostile reference family (``FAMILIES``) at each size, one call of
``dapo_answer`` and ``gsm8k`` with a short completion, seconds per call. Linear code grows by
the size ratio; the quadratic ``unwrap`` of before grew by its square (run it with
``PYTHONPATH`` pointing at an older checkout to compare).

Part 2, the cost of the time limit on the default run's scoring: ``score_all`` over 32 (one
generation round of the default 4 prompts x 8) and 200 (an evaluation) typical completions,
in this process (each call under the interval timer) and through a worker process (the same
function without the ``bounded`` mark), milliseconds per batch, mean over ``--reps`` batches.
"""

from __future__ import annotations

import argparse
import random
import time

from dapo_rl.rewards import dapo_answer, gsm8k_answer, score_all

FAMILIES = {
    # each round of the old unwrap loop stripped one " ." and rescanned every \boxed
    "boxes then ' .'": lambda n: "x\\boxed{1}" * (n // 20) + " ." * (n // 4),
    "'$ ' repeated": lambda n: "$ " * (n // 2),
    "'1' then ' .'": lambda n: "1" + " ." * (n // 2),
    "digits": lambda n: "9" * n,
    "open braces": lambda n: "\\boxed{" + "{" * n,
    "thousands": lambda n: "1,000" * (n // 5) + "x",
}


def parse_times(sizes: list[int]) -> None:
    print("| reference | chars | dapo_answer s | gsm8k s |")
    print("|---|---:|---:|---:|")
    for name, make in FAMILIES.items():
        for n in sizes:
            reference = make(n)
            cells = []
            for verifier in (dapo_answer, gsm8k_answer):
                start = time.perf_counter()
                verifier("Answer: 1", reference)
                cells.append(f"{time.perf_counter() - start:.4f}")
            print(f"| {name} | {len(reference)} | {' | '.join(cells)} |", flush=True)


def unmarked(completion: str, reference: str):
    """``dapo_answer`` without the ``bounded`` mark: ``score_all`` sends it to a worker."""
    return dapo_answer(completion, reference)


def overhead(reps: int) -> None:
    rng = random.Random(0)
    pairs = [(rng.randint(1, 20), rng.randint(1, 20)) for _ in range(200)]
    completions = [f"{a} + {b} = {a + b}.\nAnswer: {a + b}" for a, b in pairs]
    references = [str(a + b) for a, b in pairs]
    print("\n| batch | in-process ms | worker ms |")
    print("|---:|---:|---:|")
    for n in (32, 200):
        cells = []
        for fn in (dapo_answer, unmarked):
            score_all(fn, completions[:n], references[:n])  # forks the worker once
            start = time.perf_counter()
            for _ in range(reps):
                verdicts, _ = score_all(fn, completions[:n], references[:n])
            cells.append(f"{(time.perf_counter() - start) / reps * 1e3:.2f}")
            assert all(v.acc for v in verdicts)
        print(f"| {n} | {' | '.join(cells)} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="5000,20000,50000", help="reference lengths, chars")
    p.add_argument("--reps", type=int, default=20, help="batches timed per cell in part 2")
    args = p.parse_args()
    parse_times([int(s) for s in args.sizes.split(",")])
    overhead(args.reps)


if __name__ == "__main__":
    main()
