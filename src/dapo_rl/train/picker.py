"""What dynamic sampling remembers between steps, and which prompts it passes over.

The prompt picker (``PromptPicker``): "sampler" is kept for the rollout engine that samples
completions, so the two are never confused.

``train.step.collect`` asks this module which prompts to sample and tells it what came out.
It owns four pieces of bookkeeping, all plain Python (no torch.distributed: under data
parallel every rank holds an identical copy, because every rank is fed the same prompt
stream, the pooled outcomes and the same seeded random draws):

- **Pass-through rate** of the last step: the share of sampled groups that survived the
  filter, from which the next refill sizes its request (DAPO 3.2, ``algo.oversample``).
- **Carry-over** (``algo.carry_over``): informative groups found beyond
  ``rollout.prompts_per_step`` are kept and trained on first by the next step instead of
  being thrown away. They were sampled by the policy one update earlier; their sampler
  log-probs are that behaviour policy's, so as ``old_logp`` they make the PPO ratio correct
  for the step of staleness, and the clip bounds it. At most ``prompts_per_step - 1``
  groups are carried, so every step still samples fresh prompts (its rollout statistics
  are never empty and the policy always sees some of its own samples), and a carried group
  older than one step is dropped.
- **Prompt history**, keyed by the problem text: groups sampled, the last ``HISTORY``
  group accuracies, and the runs of consecutive all-correct and all-wrong groups.
- **Predictive skip** (GRESO, arXiv 2506.02177; ``algo.predictive_skip``): zero-variance
  groups carry no gradient, and a prompt that gave one tends to give one again. A prompt
  whose last k groups were all correct is passed over with probability
  ``1 - explore_easy**k`` (all wrong: ``explore_hard``): every zero-variance group in a row
  multiplies the chance of trying the prompt again by the explore rate. That chance never
  falls below ``algo.skip_explore_min > 0`` (the floor of the rates and of ``e**k``), so no
  prompt is ever skipped for sure and a prompt that changed is found again. The
  two rates adapt after every step toward ``algo.skip_target_zero_var``, split equally
  between the kinds: when the share of sampled groups that came out all correct exceeds
  half the target, ``explore_easy`` drops by ``algo.skip_explore_step`` (skip more), else
  it rises; likewise ``explore_hard``. The draws come from the picker's own seeded
  ``random.Random``, whose state is checkpointed, so resume stays exact.
- **Retirement** (``algo.retire_after`` n > 0): a prompt all correct in each of its last n
  groups is always passed over, a deterministic choice the user opts into.

Passing over is bounded: one request passes over at most ``SKIP_BUDGET`` prompts per
prompt asked for, then takes the rest of the stream as it comes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

HISTORY = 4  # group accuracies remembered per prompt
SKIP_BUDGET = 16  # prompts one request may pass over, per prompt it asks for


@dataclass(frozen=True)
class PromptRecord:
    """What the groups sampled for one prompt showed."""

    seen: int = 0  # groups sampled
    accs: tuple[float, ...] = ()  # mean accuracy of the last HISTORY groups, oldest first
    easy_run: int = 0  # latest groups in a row that were all correct
    hard_run: int = 0  # latest groups in a row that were all wrong


def record_outcome(rec: PromptRecord, acc: float) -> PromptRecord:
    """``rec`` after one more group of mean accuracy ``acc`` (1: all correct, 0: all wrong)."""
    return PromptRecord(
        seen=rec.seen + 1,
        accs=(*rec.accs, acc)[-HISTORY:],
        easy_run=rec.easy_run + 1 if acc == 1 else 0,
        hard_run=rec.hard_run + 1 if acc == 0 else 0,
    )


def skip_probability(
    rec: PromptRecord, *, explore_easy: float, explore_hard: float, floor: float
) -> float:
    """GRESO's skip rule: ``1 - max(e**k, floor)`` after k zero-variance groups in a row
    (e: the explore rate of their kind), else 0. The floor keeps the chance of sampling
    the prompt at ``floor`` or more however long the run grows."""
    if rec.easy_run:
        return 1.0 - max(explore_easy**rec.easy_run, floor)
    if rec.hard_run:
        return 1.0 - max(explore_hard**rec.hard_run, floor)
    return 0.0


def predicted_zero_var(rec: PromptRecord, group_size: int) -> float:
    """P(the next group of ``group_size`` is all correct or all wrong), from the history.

    Beta-binomial predictive: a uniform prior on the prompt's pass rate, updated with the
    completions of the remembered groups (``accs``), and G draws from the posterior.
    """
    right = sum(rec.accs) * group_size
    a, b = 1.0 + right, 1.0 + len(rec.accs) * group_size - right
    all_right = all_wrong = 1.0
    for i in range(group_size):
        all_right *= (a + i) / (a + b + i)
        all_wrong *= (b + i) / (a + b + i)
    return all_right + all_wrong


def adapt_explore(rate: float, share: float, target: float, *, step: float, low: float) -> float:
    """One step of an explore rate: down (skip more) while the kind's share of sampled groups
    exceeds its target, up otherwise; clipped to [low, 1]."""
    rate = rate - step if share > target else rate + step
    return min(1.0, max(low, rate))


@dataclass(frozen=True)
class PickerSettings:
    """What the prompt picker needs from the config, as plain values."""

    group_size: int
    carry_cap: int  # groups carried to the next step at most (0: no carry-over)
    predictive_skip: bool
    target: float  # zero-variance share aimed at, half all-correct and half all-wrong
    explore_init: float
    explore_step: float
    explore_min: float
    retire_after: int  # 0: never retire

    @classmethod
    def from_config(cls, cfg) -> PickerSettings:
        a, r = cfg.algo, cfg.rollout
        carry = a.carry_over and a.dynamic_sampling  # without the filter there is no surplus
        return cls(
            group_size=r.group_size,
            carry_cap=r.prompts_per_step - 1 if carry else 0,
            predictive_skip=a.predictive_skip,
            target=a.skip_target_zero_var,
            explore_init=a.skip_explore_init,
            explore_step=a.skip_explore_step,
            explore_min=a.skip_explore_min,
            retire_after=a.retire_after,
        )


class PromptPicker:
    """Per-run sampling state: pass rate, carried groups, history, explore rates, RNG.

    One step is ``begin_step`` (the carried groups), any number of ``draw`` calls (the
    prompts to sample), then ``end_step`` (the outcomes, and the groups to carry).
    """

    def __init__(self, settings: PickerSettings, *, seed: int):
        self.s = settings
        # the seed string predates the class's name; kept so seeded runs repeat their draws
        self.rng = random.Random(f"{seed}:sampler")
        self.history: dict[str, PromptRecord] = {}
        self.retired: set[str] = set()
        self.explore_easy = self.explore_hard = settings.explore_init
        self.pass_rate = 1.0  # share of groups kept by dynamic sampling in the last step
        self.steps = 0  # steps ended
        self._carried: tuple[int, list, int] = (0, [], 0)  # (step made, items, groups)
        self._stats = self._fresh(0)

    @staticmethod
    def _fresh(carried: int) -> dict:
        return {"carried": carried, "drawn": 0, "skipped": 0, "predicted": 0.0, "known": 0}

    def begin_step(self) -> tuple[list, int]:
        """The items carried from the previous step and their number of groups."""
        made, items, groups = self._carried
        self._carried = (0, [], 0)
        if self.steps - made > 1:  # older than one step: stale, dropped
            items, groups = [], 0
        self._stats = self._fresh(groups)
        return items, groups

    def _passes_over(self, problem: str, rec: PromptRecord) -> bool:
        if problem in self.retired:
            return True
        if not self.s.predictive_skip:
            return False
        p = skip_probability(
            rec,
            explore_easy=self.explore_easy,
            explore_hard=self.explore_hard,
            floor=self.s.explore_min,
        )
        return p > 0 and self.rng.random() < p

    def draw(self, stream, n: int) -> list:
        """The next ``n`` prompts of ``stream`` to sample, after passing over those the skip
        policy picks (at most ``SKIP_BUDGET * n``; then the stream is taken as it comes)."""
        out: list = []
        budget = SKIP_BUDGET * n
        while len(out) < n:
            (ex,) = stream.next(1)
            rec = self.history.get(ex.problem)
            if rec is not None and budget and self._passes_over(ex.problem, rec):
                budget -= 1
                self._stats["skipped"] += 1
                continue
            if rec is not None:
                self._stats["predicted"] += predicted_zero_var(rec, self.s.group_size)
                self._stats["known"] += 1
            out.append(ex)
        self._stats["drawn"] += n
        return out

    def end_step(self, outcomes: list[tuple[str, float]], carry: list, carry_groups: int) -> None:
        """Record every sampled group's (problem, mean accuracy), adapt the explore rates and
        keep ``carry`` (``carry_groups`` groups, at most ``carry_cap``) for the next step."""
        n = self.s.retire_after
        for problem, acc in outcomes:
            rec = record_outcome(self.history.get(problem, PromptRecord()), acc)
            self.history[problem] = rec
            if n and rec.easy_run >= n:
                self.retired.add(problem)
            else:
                self.retired.discard(problem)
        if self.s.predictive_skip and outcomes:
            half, s = self.s.target / 2, self.s
            easy = sum(acc == 1 for _, acc in outcomes) / len(outcomes)
            hard = sum(acc == 0 for _, acc in outcomes) / len(outcomes)
            self.explore_easy = adapt_explore(
                self.explore_easy, easy, half, step=s.explore_step, low=s.explore_min
            )
            self.explore_hard = adapt_explore(
                self.explore_hard, hard, half, step=s.explore_step, low=s.explore_min
            )
        if carry_groups > self.s.carry_cap:
            raise ValueError(f"{carry_groups} groups to carry, cap {self.s.carry_cap}")
        self._carried = (self.steps, carry, carry_groups) if carry_groups else (0, [], 0)
        self.steps += 1

    def metrics(self) -> dict[str, float]:
        """The ``ds/`` metrics of the step just collected."""
        st = self._stats
        out = {
            "ds/carried_groups": st["carried"],
            "ds/skipped_prompts": st["skipped"],
            "ds/retired_prompts": len(self.retired),
            "ds/explore_easy": self.explore_easy,
            "ds/explore_hard": self.explore_hard,
            "ds/seen_before_frac": st["known"] / max(st["drawn"], 1),
        }
        if st["known"]:  # the predicted share of the prompts that have a history
            out["ds/predicted_zero_var_frac"] = st["predicted"] / st["known"]
        return out

    def state_dict(self) -> dict:
        return {
            "history": {
                p: (r.seen, list(r.accs), r.easy_run, r.hard_run) for p, r in self.history.items()
            },
            "retired": sorted(self.retired),
            "explore": (self.explore_easy, self.explore_hard),
            "rng": self.rng.getstate(),
            "steps": self.steps,
            "carried": self._carried,
        }

    def load_state_dict(self, state: dict) -> None:
        self.history = {
            p: PromptRecord(seen, tuple(accs), easy, hard)
            for p, (seen, accs, easy, hard) in state["history"].items()
        }
        self.retired = set(state["retired"])
        self.explore_easy, self.explore_hard = state["explore"]
        self.rng.setstate(state["rng"])
        self.steps = int(state["steps"])
        self._carried = tuple(state["carried"])
