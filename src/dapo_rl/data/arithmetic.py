"""The built-in ``arithmetic`` task: seeded, infinite integer-answer problems.

Problem ``i`` of a stream is a pure function of ``(seed, i)``, so the stream position is a
single integer and resuming is exact. The held-out set is drawn from a disjoint seed space
and its problems are removed from the training stream, so evaluation is on unseen problems
whenever the problem space is large enough to allow it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dapo_rl.data.files import Example

_EVAL_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class Arithmetic:
    """Problems with ``num_terms`` operands in ``[min_value, max_value]`` and operators ``ops``."""

    min_value: int = 1
    max_value: int = 20
    num_terms: int = 2
    ops: str = "+"

    def problem(self, rng: random.Random) -> tuple[str, int]:
        terms = [rng.randint(self.min_value, self.max_value) for _ in range(self.num_terms)]
        ops = [rng.choice(self.ops) for _ in range(self.num_terms - 1)]
        expr = str(terms[0]) + "".join(f" {o} {t}" for o, t in zip(ops, terms[1:], strict=False))
        return expr, eval(expr)  # safe: expr is built above from integers and + - *

    def example(self, seed: int, index: int) -> Example:
        expr, value = self.problem(random.Random(f"{seed}:{index}"))
        return Example(
            problem=f"What is {expr}?",
            answer=str(value),
            id=f"arith-{seed}-{index}",
            template="dapo_oneshot",  # its worked example is arithmetic: for this task only
        )

    def held_out(self, seed: int, size: int) -> list[Example]:
        """``size`` distinct problems from the evaluation seed space (fewer if it is small)."""
        out, seen = [], set()
        for i in range(size * 50):
            ex = self.example(seed + _EVAL_SEED_OFFSET, i)
            if ex.problem not in seen:
                seen.add(ex.problem)
                out.append(
                    Example(ex.problem, ex.answer, f"arith-eval-{len(out)}", template=ex.template)
                )
            if len(out) == size:
                break
        return out
