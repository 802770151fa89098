"""Does the default run learn? Runs `dapo train` and summarises it for docs/results.md.

    python benchmarks/learning.py                       # the default run (dapo preset)
    python benchmarks/learning.py --name grpo -- --preset grpo
    python benchmarks/learning.py --determinism         # two 2-step runs, same seed: equal?

Everything after ``--`` is passed to ``dapo train``. The wall time is measured around the
whole command (model loading, every evaluation and checkpoint included). The summary is
printed as markdown and saved to benchmarks/results/learning_<name>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from dapo_rl.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
VOLATILE = ("time/", "throughput/", "mem/")


def run_train(run_dir: Path, extra: list[str]) -> float:
    """``dapo train`` with ``extra`` in ``run_dir`` (overwritten), in its own process; its wall
    time in seconds. The other benchmarks that train call it too."""
    cmd = [
        sys.executable,
        "-m",
        "dapo_rl.cli",
        "train",
        f"run.dir={run_dir}",
        "run.overwrite=true",
        "run.progress=false",
        *extra,
    ]
    print("$", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def summarise(name: str, run_dir: Path, wall: float, extra: list[str]) -> dict:
    recs = read_metrics(run_dir)
    evals = [(r["step"], r["eval/acc"]) for r in recs if "eval/acc" in r]
    steps = [r for r in recs if r["step"] > 0]
    out = {
        "name": name,
        "command": "python benchmarks/learning.py --name "
        + name
        + (" -- " + " ".join(extra) if extra else ""),
        "wall_s": round(wall, 1),
        "steps": len(steps),
        "eval_curve": evals,
        "base_acc": evals[0][1],
        "final_acc": evals[-1][1],
        "gain_points": round(100 * (evals[-1][1] - evals[0][1]), 1),
        "mean_step_s": round(sum(r["time/step"] for r in steps) / max(len(steps), 1), 2),
        "mean_train_acc_first5": round(sum(r["acc/mean"] for r in steps[:5]) / 5, 3)
        if len(steps) >= 5
        else None,
        "mean_train_acc_last5": round(sum(r["acc/mean"] for r in steps[-5:]) / 5, 3)
        if len(steps) >= 5
        else None,
        "config": (run_dir / "config.yaml").read_text(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"learning_{name}.json").write_text(json.dumps(out, indent=2))
    print(
        "\n| run | steps | wall time | held-out acc (start -> end) | gain |\n|---|---|---|---|---|"
    )
    print(
        f"| {name} | {out['steps']} | {wall / 60:.1f} min | {out['base_acc']:.3f} -> "
        f"{out['final_acc']:.3f} | {out['gain_points']:+.1f} pts |"
    )
    print("eval curve (step, acc):", ", ".join(f"({s}, {a:.3f})" for s, a in evals))
    return out


def determinism(extra: list[str]) -> bool:
    base = ROOT / "runs" / "determinism"
    overrides = ["train.steps=2", "eval.size=20", *extra]
    for tag in ("a", "b"):
        run_train(base / tag, overrides)
    a, b = (
        [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in read_metrics(base / t)]
        for t in ("a", "b")
    )
    same = a == b
    print(
        f"\ndeterminism: two runs with the same seed give {'the same' if same else 'DIFFERENT'} "
        f"metrics ({len(a)} records, {sum(len(r) for r in a)} values compared)"
    )
    return same


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--name", default="default")
    p.add_argument("--determinism", action="store_true")
    p.add_argument("extra", nargs="*", help="dapo train arguments (after --)")
    args = p.parse_args()
    if args.determinism:
        return 0 if determinism(args.extra) else 1
    run_dir = ROOT / "runs" / f"learning-{args.name}"
    wall = run_train(run_dir, args.extra)
    summarise(args.name, run_dir, wall, args.extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
