"""The HTML run report: one self-contained file comparing runs over their steps.

Owns which metrics a report shows and how runs are compared: a chart per health signal
(held-out accuracy, reward, entropy, length, clip fractions, zero-variance share) with
every run overlaid in its own colour, a table of each run's final and best values, and
each run's resolved config. Charts are inline SVG (``report.plot``): no network, no
scripts, no plotting package. A metric a run never logged is left out of that run's
lines and shown as "-" in the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from pathlib import Path

from dapo_rl.errors import DapoError
from dapo_rl.metrics import as_float, read_metrics
from dapo_rl.report.plot import DASHES, PALETTE, Series, line_chart

# (title, metric keys drawn together, fixed y-range to include or None)
CHARTS = (
    ("Held-out accuracy", ("eval/acc",), (0.0, 1.0)),
    ("Reward", ("reward/mean",), None),
    ("Entropy", ("entropy/mean",), None),
    ("Completion length (tokens)", ("len/mean",), None),
    ("Clip fractions", ("clip/high_frac", "clip/low_frac"), None),
    ("Zero-variance groups", ("ds/zero_var_frac",), (0.0, 1.0)),
)
# (metric, which direction is best: "max", "min", or None when neither is better)
TABLE = (
    ("eval/acc", "max"),
    ("acc/mean", "max"),
    ("reward/mean", "max"),
    ("entropy/mean", None),
    ("len/mean", None),
    ("len/truncated_frac", "min"),
    ("ds/zero_var_frac", "min"),
)

_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.chart, .missing { border: 1px solid #ddd; background: #fff; }
.missing { width: 540px; padding: 10px; color: #777; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child, td:nth-child(2) { text-align: left; }
pre { font-size: 12px; background: #f6f6f6; padding: 8px; }
"""


@dataclass(frozen=True)
class Run:
    label: str
    path: Path
    records: list[dict]


def load_run(run_dir: Path, label: str) -> Run:
    """The step records of one run; DapoError when there are none to report."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise DapoError(f"no metrics.jsonl in run directory {run_dir}")
    records = read_metrics(run_dir)  # DapoError naming the line that is not a record
    if not records:
        raise DapoError(f"metrics.jsonl in run directory {run_dir} is empty")
    records = sorted(records, key=lambda r: r.get("step", 0))
    return Run(label, Path(run_dir), records)


def default_labels(run_dirs: list[Path]) -> list[str]:
    """Each directory's name, or its last two path parts where names collide."""
    names = [Path(d).resolve().name for d in run_dirs]
    return [
        "/".join(Path(d).resolve().parts[-2:]) if names.count(n) > 1 else n
        for d, n in zip(run_dirs, names, strict=True)
    ]


def series_of(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of every record holding a numeric ``key``; nan/inf kept as gaps."""
    xs, ys = [], []
    for r in records:
        y = as_float(r.get(key))
        if y is not None:
            xs.append(float(r.get("step", len(xs))))
            ys.append(y)
    return xs, ys


def final_and_best(
    records: list[dict], key: str, best: str | None
) -> tuple[float | None, tuple[float, float] | None]:
    """Last finite value, and (best value, its step) in direction ``best``; None if absent."""
    points = [(x, y) for x, y in zip(*series_of(records, key), strict=True) if math.isfinite(y)]
    if not points:
        return None, None
    if best is None:
        return points[-1][1], None
    pick = max if best == "max" else min
    step, value = pick(points, key=lambda p: p[1])
    return points[-1][1], (value, step)


def _chart(title: str, keys: tuple[str, ...], y_range, runs: list[Run]) -> str:
    series = []
    for i, run in enumerate(runs):
        for j, key in enumerate(keys):
            xs, ys = series_of(run.records, key)
            if xs:
                label = run.label if len(keys) == 1 else f"{run.label} · {key}"
                color, dash = PALETTE[i % len(PALETTE)], DASHES[j % len(DASHES)]
                series.append(Series(label, xs, ys, color, dash))
    caption = f"{title} ({', '.join(keys)})"
    if not series:
        return f'<div class="missing">{escape(caption)}: not logged by any run</div>'
    return line_chart(series, caption, y_range)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _table(runs: list[Run]) -> str:
    rows = [
        "<table><tr><th>metric</th><th>run</th><th>final</th><th>best</th>"
        "<th>best at step</th></tr>"
    ]
    for key, best in TABLE:
        for run in runs:
            final, top = final_and_best(run.records, key, best)
            value, step = top if top else (None, None)
            rows.append(
                f"<tr><td>{escape(key)}</td><td>{escape(run.label)}</td><td>{_cell(final)}</td>"
                f"<td>{_cell(value)}</td><td>{'-' if step is None else f'{step:.0f}'}</td></tr>"
            )
    rows.append("</table>")
    return "\n".join(rows)


def _configs(runs: list[Run]) -> str:
    parts = []
    for run in runs:
        path = run.path / "config.yaml"
        if path.is_file():
            parts.append(
                f"<details><summary>{escape(run.label)}: {escape(str(path))}</summary>"
                f"<pre>{escape(path.read_text())}</pre></details>"
            )
    return "\n".join(parts)


def render(runs: list[Run]) -> str:
    """The report page for loaded runs."""
    steps = ", ".join(
        f"{escape(r.label)} ({max(x.get('step', 0) for x in r.records)} steps)" for r in runs
    )
    charts = "\n".join(_chart(t, keys, yr, runs) for t, keys, yr in CHARTS)
    configs = _configs(runs)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8"><title>dapo-rl report</title>',
            f"<style>{_STYLE}</style></head><body>",
            "<h1>dapo-rl run report</h1>",
            f"<p>Runs: {steps}</p>",
            f'<div class="charts">\n{charts}\n</div>',
            "<h2>Final and best values</h2>",
            _table(runs),
            *(["<h2>Configs</h2>", configs] if configs else []),
            "</body></html>",
        ]
    )


def write_report(run_dirs: list[Path], out: Path, labels: list[str] | None = None) -> Path:
    """Write the HTML report comparing ``run_dirs`` to ``out``; returns ``out``."""
    if not run_dirs:
        raise DapoError("no run directories to report on")
    labels = list(labels) if labels else default_labels(run_dirs)
    if len(labels) != len(run_dirs):
        raise DapoError(f"{len(labels)} labels given for {len(run_dirs)} run directories")
    runs = [load_run(Path(d), label) for d, label in zip(run_dirs, labels, strict=True)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(runs), encoding="utf-8")
    return out
