"""Sample completions: a few per training step and per evaluation, for reading, not scoring.

Each record holds ``prompt`` (the problem text), ``completion``, ``reward`` (shaped, in
training; the verifier's score at evaluation), ``acc``, ``length`` (tokens) and
``truncated``, plus ``step``, ``kind`` (``train`` or ``eval``) and, at evaluation, ``set``.
They are appended to ``<run.dir>/samples.jsonl`` and handed to every metric sink that takes
them (TensorBoard: markdown text; W&B: a table; both under ``samples/train`` and
``samples/eval``). Texts are cut at ``MAX_CHARS`` so the file stays
small however long the completions grow. Training samples are the first completion of the
first groups of a step's first generation round: whatever the filter later kept or dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

SAMPLES_PER_STEP = 4  # training completions kept per step
SAMPLES_PER_EVAL = 4  # greedy completions kept per evaluated set
MAX_CHARS = 2000  # longest prompt or completion text kept, in characters


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + " [...]"


def sample_records(examples, texts, rewards, ro, count: int, group: int = 1) -> list[dict]:
    """Records of the first completion of the first ``count`` examples.

    ``texts`` (N,), ``rewards`` (N,) (floats or Verdicts) and the rollout ``ro`` hold
    ``group`` completions per example in contiguous rows. A reward is a float or a
    ``(reward, acc)`` pair or a Verdict (its score and acc).
    """
    out = []
    for i, ex in enumerate(examples[:count]):
        row = i * group
        r = rewards[row]
        if isinstance(r, tuple):
            r, acc = r
        else:
            acc = getattr(r, "acc", 0.0)
        out.append(
            {
                "prompt": _cut(ex.problem),
                "completion": _cut(texts[row]),
                "reward": float(getattr(r, "score", r)),
                "acc": float(acc),
                "length": int(ro.lengths[row]),
                "truncated": bool(ro.truncated[row]),
            }
        )
    return out


def markdown(records: list[dict]) -> str:
    """The records as a markdown list for TensorBoard's text tab."""
    lines = []
    for r in records:
        head = f"**reward {r['reward']:.3g}, acc {r['acc']:.0f}, {r['length']} tokens"
        head += ", truncated**" if r["truncated"] else "**"
        where = f" ({r['set']})" if r.get("set") else ""
        lines.append(f"{head}{where}\n\n> {r['prompt']}\n\n```\n{r['completion']}\n```")
    return "\n\n---\n\n".join(lines)


class SamplesLog:
    """Appends records to ``samples.jsonl``; mirrors them to the sinks with ``write_samples``."""

    def __init__(self, run_dir: str | Path, sinks=()):
        self.path = Path(run_dir) / "samples.jsonl"
        self.sinks = [s for s in sinks if hasattr(s, "write_samples")]

    def write(self, step: int, kind: str, records: list[dict]) -> None:
        if not records:
            return
        with self.path.open("a") as f:
            for r in records:
                f.write(json.dumps({"step": step, "kind": kind, **r}) + "\n")
        for sink in self.sinks:
            sink.write_samples(kind, records, step)


def read_samples(run_dir: str | Path) -> list[dict]:
    """Every record of a run's ``samples.jsonl`` (none if the run has no such file)."""
    path = Path(run_dir) / "samples.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
