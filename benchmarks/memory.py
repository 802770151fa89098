"""Does memory grow over a long run? ``dapo train`` for 100 steps, then its memory per step.

    python benchmarks/memory.py                       # 100 steps, small batches: ~10 min on 2 cores
    python benchmarks/memory.py --steps 20 -- model.name=tiny-random

Every step's record holds ``mem/rss`` (resident memory after the step), ``mem/peak_rss``
and, on a GPU, ``mem/cuda_peak`` (``dapo_rl.metrics.memory_metrics``). This runs the real
model with small steps (2 prompts x 4 completions, at most 32 new tokens; arguments after
``--`` override them) so that 100 steps fit in minutes, and reports the resident memory at
a few steps and the least-squares slope over the second half of the run (after warm-up).
Saved to ``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from learning import run_train  # the same dapo train invocation

from dapo_rl.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "rollout.prompts_per_step=2",
    "rollout.group_size=4",
    "rollout.max_new_tokens=32",
    "algo.overlong_buffer=8",
    "eval.every=0",
    "eval.size=20",
    "run.checkpoint_every=50",
]


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--run-dir", default=str(ROOT / "runs" / "memory"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory.json"))
    p.add_argument("extra", nargs="*", help="dapo train KEY=VALUE (after --)")
    args = p.parse_args()
    overrides = [*SMALL, *args.extra, f"train.steps={args.steps}"]
    wall = run_train(Path(args.run_dir), overrides)
    steps = [r for r in read_metrics(args.run_dir) if "mem/rss" in r]
    at = {r["step"]: r["mem/rss"] for r in steps}
    half = [r for r in steps if r["step"] > args.steps // 2]
    result = {
        "command": " ".join(sys.argv),
        "overrides": overrides,
        "wall_s": wall,
        "rss_mib_at": {s: at[s] for s in sorted(at) if s in (1, 10, args.steps // 2, args.steps)},
        "peak_rss_mib": max(r["mem/peak_rss"] for r in steps),
        "slope_mib_per_step_second_half": slope(
            [r["step"] for r in half], [r["mem/rss"] for r in half]
        ),
        "rss_mib": [at[s] for s in sorted(at)],
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "rss_mib"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
