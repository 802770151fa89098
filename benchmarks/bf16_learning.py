"""Does bf16 learn as well as float32, and how much sooner does it get there?

    python benchmarks/bf16_learning.py                      # seed 0: fp32 then bf16
    python benchmarks/bf16_learning.py --seeds 0,1,2        # 3 seeds each, orders alternating
    python benchmarks/bf16_learning.py --seeds 0 -- train.steps=2 eval.size=20   # a smoke test

For each seed, the default ``dapo train`` runs twice back to back, in its own process each
(``benchmarks/learning.py``'s ``run_train``): ``model.dtype=float32`` and
``model.dtype=bfloat16`` (the bf16 run also recomputes its old log-probs in bf16, so the PPO
ratio compares one forward with itself). The order alternates from seed to seed so that a drift
in the machine's load does not favour one dtype. Everything after ``--`` is passed to both runs.
Per run it records the wall time of the whole command, the held-out curve, the gain, and the
time to ``--gain`` points: the training seconds (``time/step`` summed) up to the first
evaluation at or above the starting accuracy plus the gain (``time_to_gain``). Per dtype: the
mean and spread (min, max) over seeds. The summary is printed and saved to
benchmarks/results/bf16_learning.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from learning import ROOT, run_train  # the same `dapo train` launcher

from dapo_rl.metrics import read_metrics

DTYPES = ("float32", "bfloat16")
EXTRA = {"float32": [], "bfloat16": ["train.recompute_old_logprobs=true"]}


def time_to_gain(records: list[dict], gain: float) -> tuple[int | None, float | None]:
    """(step, training seconds) of the first evaluation at least ``gain`` above step 0's.

    The seconds are the sum of ``time/step`` over the steps up to and including that one: the
    training time the run needed, evaluations and loading left out (they are the same work in
    both dtypes' runs only up to their own speed, and the wall time is reported beside it).
    """
    evals = [r for r in records if "eval/acc" in r]
    if not evals:
        return None, None
    base, spent = evals[0]["eval/acc"], 0.0
    for r in records:
        spent += r.get("time/step", 0.0)
        if r["step"] > 0 and r.get("eval/acc", -1.0) >= base + gain - 1e-9:
            return r["step"], spent
    return None, None


def _run(dtype: str, seed: int, extra: list[str], gain: float) -> dict:
    run_dir = ROOT / "runs" / f"bf16-learning-{dtype}-s{seed}"
    args = [f"model.dtype={dtype}", f"run.seed={seed}", *EXTRA[dtype], *extra]
    wall = run_train(run_dir, args)
    recs = read_metrics(run_dir)
    evals = [(r["step"], r["eval/acc"]) for r in recs if "eval/acc" in r]
    steps = [r for r in recs if r["step"] > 0]
    step_at, train_s = time_to_gain(recs, gain)
    # the wall clock of the run at that evaluation (loading and evaluations included)
    run_s = next((r.get("time/run") for r in recs if r["step"] == step_at), None)
    return {
        "dtype": dtype,
        "seed": seed,
        "args": args,
        "wall_s": wall,
        "eval_curve": evals,
        "gain_points": 100 * (evals[-1][1] - evals[0][1]),
        "mean_step_s": statistics.fmean(r["time/step"] for r in steps) if steps else None,
        "mean_generate_s": statistics.fmean(r.get("time/generate", 0.0) for r in steps)
        if steps
        else None,
        "mean_update_s": statistics.fmean(r.get("time/update", 0.0) for r in steps)
        if steps
        else None,
        "step_reaching_gain": step_at,
        "train_s_to_gain": train_s,
        "wall_s_to_gain": run_s,
    }


def _spread(values: list) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", default="0", help="comma-separated run.seed values")
    p.add_argument("--gain", type=float, default=0.15, help="held-out gain to time (0.15 = +15)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bf16_learning.json"))
    p.add_argument("extra", nargs="*", help="dapo train arguments for both runs (after --)")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    runs = []
    for i, seed in enumerate(seeds):
        for dtype in DTYPES[:: 1 if i % 2 == 0 else -1]:
            runs.append(_run(dtype, seed, args.extra, args.gain))
    per_dtype = {
        d: {
            key: _spread([r[key] for r in runs if r["dtype"] == d])
            for key in ("wall_s", "gain_points", "mean_step_s", "train_s_to_gain", "wall_s_to_gain")
        }
        | {
            "reached_gain": sum(
                r["dtype"] == d and r["step_reaching_gain"] is not None for r in runs
            )
        }
        for d in DTYPES
    }
    print(
        "\n| dtype | seed | wall s | gain pts | s/step | step at +gain | train s to +gain "
        "| wall s to +gain |\n|---|---|---|---|---|---|---|---|"
    )
    for r in runs:
        train_s, wall_s = (
            "-" if r[k] is None else f"{r[k]:.0f}" for k in ("train_s_to_gain", "wall_s_to_gain")
        )
        print(
            f"| {r['dtype']} | {r['seed']} | {r['wall_s']:.0f} | {r['gain_points']:+.1f} | "
            f"{r['mean_step_s'] or 0:.1f} | {r['step_reaching_gain']} | {train_s} | {wall_s} |"
        )
    summary = {
        "command": "python benchmarks/bf16_learning.py " + " ".join(sys.argv[1:]),
        "gain": args.gain,
        "per_dtype": per_dtype,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
