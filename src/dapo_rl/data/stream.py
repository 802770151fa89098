"""The training prompt stream: endless, seeded, and resumable from one integer.

A stream reads from either the built-in arithmetic task (problem ``i`` is a function of
``(seed, i)``) or a finite list of examples, reshuffled each epoch with a permutation that
is a function of ``(seed, epoch)``. Either way the whole state is ``position``, the number
of examples handed out, so a checkpoint stores one integer and resume is exact. Running
out of a finite list starts the next epoch; nothing is dropped.
"""

from __future__ import annotations

import random

from dapo_rl.data.arithmetic import Arithmetic
from dapo_rl.data.files import Example


class PromptStream:
    def __init__(
        self, source: Arithmetic | list[Example], *, seed: int, exclude: set[str] = frozenset()
    ):
        if isinstance(source, list) and not source:
            raise ValueError("empty training set")
        self.source, self.seed, self.exclude = source, seed, exclude
        self.position = 0
        self._order: tuple[int, list[int]] | None = None

    def _at(self, i: int) -> Example:
        if isinstance(self.source, Arithmetic):
            return self.source.example(self.seed, i)
        epoch, index = divmod(i, len(self.source))
        if self._order is None or self._order[0] != epoch:
            order = list(range(len(self.source)))
            random.Random(f"{self.seed}:epoch:{epoch}").shuffle(order)
            self._order = (epoch, order)
        return self.source[self._order[1][index]]

    @property
    def epoch(self) -> int:
        return 0 if isinstance(self.source, Arithmetic) else self.position // len(self.source)

    def next(self, n: int) -> list[Example]:
        """The next ``n`` examples, skipping held-out problems (bounded: never loops forever)."""
        out: list[Example] = []
        misses = 0
        while len(out) < n:
            ex = self._at(self.position)
            self.position += 1
            if ex.problem in self.exclude:
                misses += 1
                if misses > 1000 * n:
                    raise ValueError("every training problem is in the held-out set")
                continue
            out.append(ex)
        return out

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
