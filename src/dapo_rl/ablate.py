"""Seeded ablations of DAPO's fixes (DAPO paper, table 1) with 95% intervals, as one command.

An experiment is a list of rows, each an ordinary training config; every row runs with the
same seeds, so rows are compared seed by seed (paired differences, ``dapo_rl.report.stats``).
- ``cumulative`` (the paper's table): naive GRPO (symmetric clip 0.2, per-sequence mean, no
  KL) -> +overlong filtering -> +clip-higher -> +soft overlong punishment -> +token-level
  loss -> +dynamic sampling (DAPO).
- one experiment per fix where the cumulative table cannot isolate it: the full recipe with
  only that fix switched (``clip_higher``, ``dynamic_sampling``, ``token_loss``,
  ``overlong``), all rows from the same start.
- ``headline``: the cumulative table's first and last rows only (naive GRPO against full
  DAPO), a third of the cost per seed, for the seeds a paired interval needs.

For every run it reads the held-out gain and the failure-mode metric of each fix from the
run's own metrics: entropy over the last quarter of steps and the share of tokens clipped
at the upper bound (clip-higher), the share of zero-variance groups among those sampled,
of generated tokens in them and of groups trained on (dynamic sampling), the mean length of
correct and of wrong completions (token-level loss), the truncation rate and the reward of
truncated completions (overlong rows). Each run is a run directory under
``OUT/<i>_<row>/seed<S>``; finished runs are not run again and unfinished ones resume, so a
killed ablation continues where it stopped. A run directory already there must hold the
same config as its row (``checkpoint.config_hash``), so a finished run is never read under
another row's name; run directories of identical rows may be copied between experiments.
Results: ``ablation.json``, ``ablation.md`` and ``report.html`` in ``OUT``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from dapo_rl import config as config_mod
from dapo_rl.errors import DapoError
from dapo_rl.metrics import read_metrics
from dapo_rl.report.stats import excludes_zero, mean_interval, paired_differences

# The default budget of every run (any key can be overridden on the command line). One
# checkpoint at a time, for resuming a killed run; a finished run's are removed (1.6 GB each
# for SmolLM2-135M) unless ``keep_checkpoints``.
BUDGET = {"train.steps": 12, "eval.every": 0, "eval.size": 100, "run.keep_checkpoints": 1}
# Built-in tasks (``--task``): overrides under every row, before the command line's.
# ``arithmetic`` is the quick default (config defaults: sums up to 20, ~17-token completions,
# almost nothing truncated, so the overlong rows have nothing to act on). ``tight`` is the
# same sums under a generation limit just above "a + b = c.\nAnswer: c" (~17 tokens, one per
# digit): on SmolLM2-135M-Instruct the untrained policy is 41% right and 13% of its
# completions are cut, some of them already right (DAPO's truncation noise); correct and
# wrong completions do not differ in length (benchmarks/calibrate.py,
# benchmarks/results/calibration_task_tight.json, docs/results.md).
# ``hot`` samples the default sums at temperature 1.3: the untrained policy is 15% right and
# a third of its completions run to the 64-token limit as gibberish, so wrong completions
# are about twice as long as right ones (36.5 vs 18.9 tokens) - the long low-quality samples
# a per-sequence mean under-penalises (DAPO 3.3; benchmarks/calibrate.py --temperatures,
# benchmarks/results/calibration_temperature.json).
TASKS: dict[str, dict[str, Any]] = {
    "arithmetic": {},
    "tight": {"rollout.max_new_tokens": 18, "algo.overlong_buffer": 4},
    "hot": {"rollout.temperature": 1.3},
}
NAIVE_GRPO = {
    "preset": "grpo",
    "algo.kl_coef": 0.0,  # DAPO removes the KL term (section 2.3); so do all rows
    "algo.eps_high": 0.2,
    "algo.loss_agg": "seq_mean_token_mean",
    "algo.dynamic_sampling": False,
    "algo.overlong_shaping": False,
    "algo.overlong_filter": False,
}
CUMULATIVE: list[tuple[str, dict[str, Any]]] = [
    ("naive_grpo", {}),
    ("+overlong_filter", {"algo.overlong_filter": True}),
    ("+clip_higher", {"algo.eps_high": 0.28}),
    ("+soft_overlong", {"algo.overlong_shaping": True}),
    ("+token_loss", {"algo.loss_agg": "token_mean"}),
    ("+dynamic_sampling", {"algo.dynamic_sampling": True}),
]
# Single-fix experiments: the dapo preset with one fix varied (first row: the fix off).
SINGLE_FIX: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "clip_higher": [("eps_high_0.20", {"algo.eps_high": 0.2}), ("eps_high_0.28", {})],
    "dynamic_sampling": [("no_dynamic_sampling", {"algo.dynamic_sampling": False}), ("dapo", {})],
    "token_loss": [("seq_mean", {"algo.loss_agg": "seq_mean_token_mean"}), ("token_mean", {})],
    "overlong": [
        ("no_overlong", {"algo.overlong_shaping": False, "algo.overlong_filter": False}),
        ("+filter", {"algo.overlong_shaping": False, "algo.overlong_filter": True}),
        ("+soft_punishment", {"algo.overlong_shaping": True, "algo.overlong_filter": False}),
    ],
}
EXPERIMENTS = ("cumulative", "headline", *SINGLE_FIX)
# What the DAPO paper says each fix does, as (row, metric, +1 up / -1 down, claim): the row
# is compared seed by seed with its experiment's first row (the fix off).
EXPECTED: dict[str, list[tuple[str, str, int, str]]] = {
    "headline": [("dapo", "eval_gain_pts", 1, "DAPO beats naive GRPO (table 1)")],
    "clip_higher": [
        ("eps_high_0.28", "clip_high_frac", -1, "fewer tokens are held at the upper clip (3.1)"),
        ("eps_high_0.28", "entropy_last_quarter", 1, "entropy does not collapse (fig. 2b)"),
    ],
    "dynamic_sampling": [
        ("dapo", "trained_zero_var_frac", -1, "no zero-gradient group is trained on (3.2)"),
        ("dapo", "eval_gain_pts", 1, "it learns faster (fig. 6)"),
    ],
    "token_loss": [
        ("token_mean", "len_wrong", -1, "long wrong completions are not under-penalised (3.3)"),
        ("token_mean", "entropy_last_quarter", -1, "no unhealthy entropy rise (fig. 4a)"),
    ],
    "overlong": [
        ("+filter", "eval_gain_pts", 1, "masking truncated samples raises accuracy (fig. 5)"),
        ("+soft_punishment", "reward_truncated", -1, "truncation is punished by length (3.4)"),
        ("+soft_punishment", "truncated_frac", -1, "fewer completions reach the limit (3.4)"),
    ],
}

# Per-run numbers: (name, metrics key, how it is read from the step records).
RUN_METRICS = (
    ("entropy_last_quarter", "entropy/mean", "last_quarter"),
    ("zero_var_frac", "ds/zero_var_frac", "mean"),
    ("zero_var_token_frac", "ds/zero_var_token_frac", "mean"),
    ("trained_zero_var_frac", "ds/trained_zero_var_frac", "mean"),
    ("clip_high_frac", "clip/high_frac", "mean"),
    ("len_correct", "len/correct_mean", "mean"),
    ("len_wrong", "len/wrong_mean", "mean"),
    ("truncated_frac", "len/truncated_frac", "mean"),
    ("reward_truncated", "reward/truncated_mean", "mean"),
    ("train_acc", "acc/mean", "mean"),
    ("gen_tokens", "ds/gen_tokens", "mean"),
)
CURVES = (
    "entropy/mean",
    "acc/mean",
    "len/mean",
    "len/correct_mean",
    "len/wrong_mean",
    "len/truncated_frac",
    "ds/zero_var_frac",
)


def task_overrides(task: str) -> dict[str, Any]:
    """The overrides of a built-in task (``TASKS``)."""
    if task not in TASKS:
        raise DapoError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    return dict(TASKS[task])


def rows(experiment: str = "cumulative") -> list[tuple[str, dict[str, Any]]]:
    """(name, overrides) of each row of ``experiment``."""
    if experiment not in EXPERIMENTS:
        raise DapoError(f"unknown experiment {experiment!r}: use one of {', '.join(EXPERIMENTS)}")
    if experiment in SINGLE_FIX:
        return [(name, dict(change)) for name, change in SINGLE_FIX[experiment]]
    out, current = [], dict(NAIVE_GRPO)
    for name, change in CUMULATIVE:
        current = {**current, **change}
        out.append((name, dict(current)))
    return [out[0], ("dapo", out[-1][1])] if experiment == "headline" else out


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def summarize_run(records: list[dict]) -> dict[str, Any]:
    """The held-out gain (points) and each fix's failure-mode metric of one run's records."""
    evals = [r["eval/acc"] for r in records if "eval/acc" in r]
    steps = [r for r in records if r.get("step", 0) > 0]
    out: dict[str, Any] = {
        "eval_acc_start": evals[0] if evals else None,
        "eval_acc_end": evals[-1] if evals else None,
        "eval_gain_pts": 100 * (evals[-1] - evals[0]) if len(evals) > 1 else None,
        "steps": len(steps),
    }
    quarter = steps[-max(1, math.ceil(len(steps) / 4)) :]
    for name, key, how in RUN_METRICS:
        chosen = quarter if how == "last_quarter" else steps
        out[name] = _mean([r[key] for r in chosen if key in r])
    return out


def _seed_entry(seed: int, run_dir: Path) -> dict[str, Any]:
    """One seed of a row: its run directory, its numbers and its curves."""
    records = read_metrics(run_dir)
    summary = summarize_run(records)
    numbers = {k: v for k, v in summary.items() if k != "steps" and v is not None}
    return {"seed": seed, "run_dir": str(run_dir), "metrics": numbers, "curves": curves_of(records)}


def _finished(run_dir: Path, steps: int) -> bool:
    if not (run_dir / "metrics.jsonl").exists():
        return False
    return any(r.get("step") == steps and "eval/acc" in r for r in read_metrics(run_dir))


def _run_one(overrides: dict[str, Any], keep_checkpoints: bool = False) -> str:
    """Train (or resume) one run; top-level so a worker process can call it. A finished
    run's checkpoints are removed unless ``keep_checkpoints``: its metrics are the result."""
    from dapo_rl.train.loop import train

    cfg = config_mod.build(overrides=overrides)
    if not _finished(Path(cfg.run.dir), cfg.train.steps):
        resume = (Path(cfg.run.dir) / "config.yaml").exists()
        train(config_mod.build(overrides={**overrides, "resume": resume}))
    root = Path(cfg.run.dir) / "checkpoints"
    if not keep_checkpoints and root.is_dir() and not root.is_symlink():
        shutil.rmtree(root)
    return cfg.run.dir


def plan(
    out_dir: Path, experiment: str, seeds: list[int], overrides: dict, task: str = "arithmetic"
) -> list[dict]:
    """Every run's full overrides, row by row and seed by seed (validated, nothing run)."""
    runs, base = [], {**BUDGET, **task_overrides(task)}
    for i, (name, row) in enumerate(rows(experiment)):
        for seed in seeds:
            run_dir = out_dir / f"{i}_{name.strip('+')}" / f"seed{seed}"
            values = {**base, **row, **overrides, "run.seed": seed, "run.dir": str(run_dir)}
            cfg = config_mod.build(overrides=values)  # a bad key fails before any run starts
            _check_existing(run_dir, cfg)
            runs.append(values)
    return runs


def _check_existing(run_dir: Path, cfg: config_mod.Config) -> None:
    """A run directory already there must hold this row's config (resumable keys aside)."""
    from dapo_rl.train.checkpoint import config_hash

    saved = run_dir / "config.yaml"
    if not saved.exists():
        return
    try:
        theirs = config_mod.from_dict(config_mod.load_yaml(saved))
    except DapoError as e:
        raise DapoError(f"{run_dir} is not a run of this ablation: {e}") from None
    if config_hash(theirs) != config_hash(cfg):
        raise DapoError(
            f"{run_dir} holds a run with another config than this row's; "
            "use another --out or remove it"
        )


def _execute(runs: list[dict], jobs: int, keep_checkpoints: bool = False) -> None:
    one = partial(_run_one, keep_checkpoints=keep_checkpoints)
    if jobs <= 1:
        for values in runs:
            one(values)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        for done in pool.map(one, [{**v, "run.threads": threads} for v in runs]):
            _ = done  # re-raises the first failure


def curves_of(records: list[dict]) -> dict[str, dict[str, list]]:
    """The per-step curve of each ``CURVES`` key in one run's records."""
    out = {}
    for key in CURVES:
        points = [(r["step"], r[key]) for r in records if r.get("step", 0) > 0 and key in r]
        if points:
            out[key] = {"steps": [p[0] for p in points], "values": [p[1] for p in points]}
    return out


def _interval(values: list[float]) -> tuple[float | None, list[float] | None]:
    """(mean, [low, high]) over seeds; the interval is None with fewer than two values."""
    m = mean_interval(values)
    if m is None:
        return None, None
    mean, lo, hi = m
    return mean, ([lo, hi] if math.isfinite(lo) and math.isfinite(hi) else None)


def _paired(before: list[dict], after: list[dict], metric: str):
    """(mean, [low, high]) of ``metric``'s seed-by-seed differences after - before."""

    def by_seed(runs: list[dict]) -> dict:
        return {r["seed"]: r["metrics"][metric] for r in runs if metric in r["metrics"]}

    return _interval(paired_differences(by_seed(before), by_seed(after)))


def aggregate_rows(names: list[str], per_row: list[list[dict]]) -> list[dict]:
    """Per row: every seed's numbers, their mean and 95% interval, and the paired difference
    to the previous row for every metric (``report.ablation`` reads this shape)."""
    result = []
    for i, (name, runs) in enumerate(zip(names, per_row, strict=True)):
        keys = list(dict.fromkeys(k for r in runs for k in r["metrics"]))
        row: dict[str, Any] = {"name": name, "seeds": runs, "mean": {}, "ci95": {}}
        for k in keys:
            mean, ci = _interval([r["metrics"][k] for r in runs if k in r["metrics"]])
            row["mean"][k] = mean
            if ci:
                row["ci95"][k] = ci
        if i:
            diff: dict[str, Any] = {"vs": names[i - 1], "mean": {}, "ci95": {}}
            diff["excludes_zero"] = {}
            for k in keys:
                mean, ci = _paired(per_row[i - 1], runs, k)
                if mean is None:
                    continue
                diff["mean"][k] = mean
                if ci:
                    diff["ci95"][k] = ci
                diff["excludes_zero"][k] = bool(ci) and excludes_zero(*ci)
            row["diff"] = diff
        result.append(row)
    return result


def run_ablation(
    out_dir: Path,
    overrides: dict[str, Any],
    *,
    seeds: list[int] | None = None,
    experiment: str = "cumulative",
    jobs: int = 1,
    task: str = "arithmetic",
    keep_checkpoints: bool = False,
) -> dict[str, Any]:
    """Run (or resume) every row with every seed; writes and returns the ablation JSON."""
    from dapo_rl.report import write_report

    seeds = seeds or [0]
    runs = plan(out_dir, experiment, seeds, overrides, task)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    _execute(runs, jobs, keep_checkpoints)
    names = [n for n, _ in rows(experiment)]
    per_row = []
    for i in range(len(names)):
        part = runs[i * len(seeds) : (i + 1) * len(seeds)]
        per_row.append(
            [_seed_entry(seed, Path(v["run.dir"])) for seed, v in zip(seeds, part, strict=True)]
        )
    result = {
        "title": f"DAPO ablation: {experiment}",
        "command": f"dapo ablate --experiment {experiment} --task {task} --seeds {len(seeds)}",
        "experiment": experiment,
        "task": task,
        "seeds": seeds,
        "overrides": {**BUDGET, **task_overrides(task), **overrides},
        "metrics": {k: {"label": label, "better": better} for k, label, _, better in COLUMNS},
        "wall_s_this_invocation": round(time.perf_counter() - start, 1),
        "rows": aggregate_rows(names, per_row),
    }
    result["verdicts"] = verdicts(experiment, result["rows"])
    (out_dir / "ablation.json").write_text(json.dumps(result, indent=1))
    (out_dir / "ablation.md").write_text(table(result))
    first_seed = [Path(r["seeds"][0]["run_dir"]) for r in result["rows"]]
    write_report(
        first_seed, out_dir / "report.html", labels=names, ablation=out_dir / "ablation.json"
    )
    return result


def verdicts(experiment: str, rows_: list[dict]) -> list[dict]:
    """Each of ``EXPECTED[experiment]``: the paired difference row - first row over seeds,
    its 95% interval, and whether it moved as the paper says (``as expected``), the other
    way (``opposite``) or not measurably (``no clear change``: the interval holds zero)."""
    by_name = {r["name"]: r for r in rows_}
    out = []
    for row, metric, sign, claim in EXPECTED.get(experiment, []):
        if row not in by_name:
            continue
        mean, ci = _paired(rows_[0]["seeds"], by_name[row]["seeds"], metric)
        if mean is None:
            continue
        if ci and excludes_zero(*ci):
            verdict = "as expected" if (mean > 0) == (sign > 0) else "opposite"
        else:
            verdict = "no clear change"
        out.append(
            {
                "row": row,
                "vs": rows_[0]["name"],
                "metric": metric,
                "expected": "up" if sign > 0 else "down",
                "claim": claim,
                "off": rows_[0]["mean"].get(metric),
                "on": by_name[row]["mean"].get(metric),
                "diff": mean,
                "ci95": ci,
                "verdict": verdict,
            }
        )
    return out


def verdict_table(found: list[dict]) -> str:
    """Markdown rows of ``verdicts``: what moved, against what the paper says (each metric
    with its ``COLUMNS`` digits)."""
    places = {k: d for k, _, d, _ in COLUMNS}
    lines = [
        "| row vs fix off | metric | paper: | off | on | on - off [95%] | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in found:
        digits = places.get(v["metric"], 3)
        lines.append(
            f"| {v['row']} vs {v['vs']} | {v['metric']} | {v['expected']}: {v['claim']} | "
            f"{_cell(v['off'], None, digits)} | {_cell(v['on'], None, digits)} | "
            f"{_cell(v['diff'], v['ci95'], digits)} | {v['verdict']} |"
        )
    return "\n".join(lines) + "\n"


# (metric, label, digits in the table, which direction is better)
COLUMNS = (
    ("eval_gain_pts", "held-out gain (pts)", 1, "max"),
    ("entropy_last_quarter", "entropy, last quarter", 3, None),
    ("zero_var_frac", "zero-var groups", 3, "min"),
    ("zero_var_token_frac", "tokens in zero-var groups", 3, "min"),
    ("trained_zero_var_frac", "zero-var groups trained on", 3, "min"),
    ("clip_high_frac", "tokens clipped above", 4, None),
    ("len_correct", "len correct", 1, None),
    ("len_wrong", "len wrong", 1, None),
    ("truncated_frac", "truncated", 3, "min"),
    ("reward_truncated", "reward of truncated", 2, None),
)


def _cell(mean, ci, digits: int) -> str:
    if mean is None:
        return "n/a"
    text = f"{mean:.{digits}f}"
    return text + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def table(result: dict[str, Any]) -> str:
    """Markdown: each row's means with 95% intervals, then the paired differences to the
    previous row (``*`` where the interval excludes zero)."""
    head = "| row | " + " | ".join(t for _, t, _, _ in COLUMNS) + " |"
    rule = "|---" * (len(COLUMNS) + 1) + "|"
    lines = [f"{len(result['seeds'])} seeds; mean [95% interval]", "", head, rule]
    for r in result["rows"]:
        cells = [_cell(r["mean"].get(k), r["ci95"].get(k), d) for k, _, d, _ in COLUMNS]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    lines += ["", "Paired difference to the previous row (* : interval excludes zero)", ""]
    lines += [head, rule]
    for r in result["rows"][1:]:
        diff, cells = r["diff"], []
        for k, _, d, _ in COLUMNS:
            star = "*" if diff["excludes_zero"].get(k) else ""
            cells.append(_cell(diff["mean"].get(k), diff["ci95"].get(k), d) + star)
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    if result.get("verdicts"):
        lines += ["", "Against what the paper says each fix does (paired by seed)", ""]
        lines.append(verdict_table(result["verdicts"]).rstrip("\n"))
    return "\n".join(lines) + "\n"
