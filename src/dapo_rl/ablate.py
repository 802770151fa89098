"""The cumulative DAPO ablation (DAPO paper, table 1) as one command.

Rows, each adding one switch to the row before, all with the same seed and budget:
naive GRPO (symmetric clip 0.2, per-sequence mean, no KL) -> +overlong filtering ->
+clip-higher -> +soft overlong punishment -> +token-level loss -> +dynamic sampling (DAPO).
Each row is an ordinary run directory under the output folder; a row whose run finished
is not run again, and an unfinished one is resumed, so the whole ablation is resumable.
The held-out accuracy is the run's own final evaluation. Results go to ``ablation.md``,
``ablation.json`` and ``report.html`` in the output folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dapo_rl import config as config_mod

# The default budget of every row (any key can be overridden on the command line): small
# enough that the six rows run in about half an hour on a 2-core CPU.
BUDGET = {"train.steps": 12, "eval.every": 0, "eval.size": 100}
NAIVE_GRPO = {
    "preset": "grpo",
    "algo.kl_coef": 0.0,  # DAPO removes the KL term (section 2.3); so do all rows
    "algo.eps_high": 0.2,
    "algo.loss_agg": "seq_mean_token_mean",
    "algo.dynamic_sampling": False,
    "algo.overlong_shaping": False,
    "algo.overlong_filter": False,
}
STEPS: list[tuple[str, dict[str, Any]]] = [
    ("naive_grpo", {}),
    ("+overlong_filter", {"algo.overlong_filter": True}),
    ("+clip_higher", {"algo.eps_high": 0.28}),
    ("+soft_overlong", {"algo.overlong_shaping": True}),
    ("+token_loss", {"algo.loss_agg": "token_mean"}),
    ("+dynamic_sampling", {"algo.dynamic_sampling": True}),
]


def rows() -> list[tuple[str, dict[str, Any]]]:
    """(name, overrides) of each cumulative row."""
    out, current = [], dict(NAIVE_GRPO)
    for name, change in STEPS:
        current = {**current, **change}
        out.append((name, dict(current)))
    return out


def _finished(run_dir: Path, steps: int) -> bool:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return False
    records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return any(r.get("step") == steps and "eval/acc" in r for r in records)


def run_ablation(out_dir: Path, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """Run (or resume) every row with the shared ``overrides``; returns the result rows."""
    from dapo_rl.report import write_report
    from dapo_rl.train.loop import train

    overrides = {**BUDGET, **overrides}
    out_dir.mkdir(parents=True, exist_ok=True)
    results, dirs = [], []
    for i, (name, row) in enumerate(rows()):
        run_dir = out_dir / f"{i}_{name.strip('+')}"
        cfg = config_mod.build(overrides={**row, **overrides, "run.dir": str(run_dir)})
        start = time.perf_counter()
        if not _finished(run_dir, cfg.train.steps):
            resume = (run_dir / "config.yaml").exists()
            cfg = config_mod.build(
                overrides={**row, **overrides, "run.dir": str(run_dir), "resume": resume}
            )
            train(cfg)
        wall = time.perf_counter() - start
        records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
        evals = [r["eval/acc"] for r in records if "eval/acc" in r]
        steps = [r for r in records if r["step"] > 0]
        results.append(
            {
                "row": name,
                "run_dir": str(run_dir),
                "eval_acc_start": evals[0],
                "eval_acc_end": evals[-1],
                "train_acc_last": steps[-1].get("acc/mean") if steps else None,
                "entropy_last": steps[-1].get("entropy/mean") if steps else None,
                "wall_s_this_invocation": round(wall, 1),
                "steps": len(steps),
            }
        )
        dirs.append(run_dir)
    (out_dir / "ablation.json").write_text(
        json.dumps({"overrides": overrides, "rows": results}, indent=2)
    )
    (out_dir / "ablation.md").write_text(table(results))
    write_report(dirs, out_dir / "report.html", labels=[r["row"] for r in results])
    return results


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| row | held-out acc start | held-out acc end | change | final entropy |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        ent = "n/a" if r["entropy_last"] is None else f"{r['entropy_last']:.3f}"
        change = 100 * (r["eval_acc_end"] - r["eval_acc_start"])
        lines.append(
            f"| {r['row']} | {r['eval_acc_start']:.3f} | {r['eval_acc_end']:.3f} | "
            f"{change:+.1f} pts | {ent} |"
        )
    return "\n".join(lines) + "\n"
