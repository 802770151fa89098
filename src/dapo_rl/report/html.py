"""The HTML run report: one self-contained file comparing runs over their steps.

Owns which metrics a report shows and how runs are compared. Charts come in four groups
(learning, policy and update, groups and lengths, cost); each run has one colour on
every chart, each metric of a chart one line style. Runs share a chart's y-axis when
their ranges are comparable; when the shared axis would flatten one run's curve (more
than ``plot.SCALE_RATIO`` times its span) the chart becomes small multiples, one panel
and scale per run. Fractions never leave [0, 1]; accuracies always show all of it.
Alerts that fired are triangles on the top edge of every chart and rows of a table.
Then: final and best values, mean time per phase, the config keys that differ between
runs, sample completions (``samples.jsonl``, when the run wrote one), each full config.

Everything a run wrote is escaped before it reaches the page (a completion is model
output: hostile), and a Content-Security-Policy forbids scripts and any fetch, so the
file is inert even where escaping were to fail. Charts are inline SVG (``report.plot``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from html import escape
from pathlib import Path

from dapo_rl.errors import DapoError
from dapo_rl.metrics import as_float
from dapo_rl.report.plot import (
    DASHES,
    PALETTE,
    SCALE_RATIO,
    Marker,
    Series,
    line_chart,
    own_scales,
)
from dapo_rl.report.runs import Run, alerts_of, load_run
from dapo_rl.report.sections import (
    alerts_table,
    config_table,
    configs_section,
    samples_section,
)

ACC = {"include": (0.0, 1.0), "bounds": (0.0, 1.0)}  # an accuracy: always the whole [0, 1]
FRAC = {"bounds": (0.0, 1.0)}  # a fraction: zoomed in, but never outside [0, 1]
POS = {"bounds": (0.0, math.inf)}  # a count, size or time: never below 0
PHASES = ("time/generate", "time/update", "time/old_logprob", "time/reward")
# section -> [(title, metric keys drawn together, axis options)]
CHARTS = {
    "Learning": [
        ("Held-out accuracy", ("eval/acc",), ACC),
        ("Training accuracy", ("acc/mean",), ACC),
        ("Reward", ("reward/mean",), {}),
    ],
    "Policy and update": [
        ("Entropy", ("entropy/mean",), POS),
        ("KL", ("kl/mean", "mismatch/kl"), {}),
        ("Gradient norm", ("grad/norm",), POS),
        ("Clip fractions", ("clip/high_frac", "clip/low_frac"), FRAC),
    ],
    "Groups and lengths": [
        ("All-correct vs all-wrong groups", ("ds/all_correct_frac", "ds/all_wrong_frac"), ACC),
        ("Truncated completions", ("len/truncated_frac",), FRAC),
        ("Completion length (tokens)", ("len/mean", "len/p90"), POS),
    ],
    "Cost": [
        ("Generated tokens per step", ("ds/gen_tokens",), POS),
        ("Generation rounds per step", ("ds/gen_rounds",), POS),
        ("Time per phase (s)", PHASES, POS),
        ("Generation throughput (tokens/s)", ("throughput/gen_tokens_per_s",), POS),
    ],
}
# (metric, which direction is best: "max", "min", or None when neither is better)
TABLE = (
    ("eval/acc", "max"),
    ("acc/mean", "max"),
    ("reward/mean", "max"),
    ("entropy/mean", None),
    ("kl/mean", None),
    ("grad/norm", None),
    ("len/mean", None),
    ("len/truncated_frac", "min"),
    ("ds/zero_var_frac", "min"),
    ("ds/all_correct_frac", None),
    ("ds/all_wrong_frac", None),
    ("ds/gen_tokens", None),
)

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_STYLE = """
body { font-family: sans-serif; margin: 20px; color: #222; background: #fff; max-width: 1600px; }
h1 { font-size: 20px; margin: 0 0 8px; } h2 { font-size: 16px; margin: 24px 0 8px; }
.charts { display: flex; flex-wrap: wrap; gap: 10px; }
.chart { border: 1px solid #ddd; background: #fff; }
.group { border: 1px dashed #bbb; padding: 4px; }
.group > p { margin: 2px 4px 4px; font-size: 12px; color: #555; }
.missing { width: 356px; padding: 10px; color: #777; border: 1px solid #eee; font-size: 13px; }
.runs span.sw { display: inline-block; width: 22px; height: 4px; vertical-align: middle; }
.runs { font-size: 14px; margin: 4px 0; } .runs li { list-style: none; margin: 2px 0; }
.note { color: #a33; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin-bottom: 8px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; vertical-align: top; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
td.yes { font-weight: bold; background: #e8f4e8; }
pre { font-size: 12px; background: #f6f6f6; padding: 6px; margin: 0;
      white-space: pre-wrap; word-break: break-word; max-height: 220px; overflow: auto; }
.samples td pre { max-width: 560px; }
"""


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
            xs.append(float(r["step"]))
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


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _run_series(run: Run, i: int, keys: tuple[str, ...]) -> list[Series]:
    out = []
    for j, key in enumerate(keys):
        xs, ys = series_of(run.records, key)
        if xs:
            out.append(Series(f"{run.label} · {key}", xs, ys, color(i), DASHES[j % len(DASHES)]))
    return out


def _markers(run: Run, i: int) -> list[Marker]:
    return [Marker(step, color(i), text) for step, text in alerts_of(run)]


def _span(series: list[Series]) -> tuple[float, float] | None:
    ys = [y for s in series for y in s.ys if math.isfinite(y)]  # lines, not bands
    return (min(ys), max(ys)) if ys else None


def axis_of(key: str) -> dict:
    """The axis options of the report chart that shows ``key`` ({} for another key)."""
    return next((ax for charts in CHARTS.values() for _, ks, ax in charts if key in ks), {})


Panel = tuple[str, list[Series], list[Marker]]  # (name of the run, its lines, its alerts)


def shared_or_own(
    title: str, subtitle: str, panels: list[Panel], axis: dict, styles=(), unit: str = "run"
) -> str:
    """One chart of every panel's lines, or small multiples (one chart and scale per
    panel) when one axis would flatten a panel's curve (``plot.own_scales``)."""
    spans = [sp for _, series, _ in panels if (sp := _span(series))]
    if "include" in axis or not own_scales(spans):
        series = [x for _, s, _ in panels for x in s]
        marks = [replace(m, row=row) for row, (_, _, ms) in enumerate(panels) for m in ms]
        return line_chart(series, title, subtitle, markers=marks, styles=styles, **axis)
    charts = [
        line_chart(s, name, subtitle, markers=marks, styles=styles, **axis)
        for name, s, marks in panels
    ]
    return (
        f'<div class="group own-scales"><p><b>{escape(title)}</b>: one scale per {unit} '
        f"(their ranges differ more than {SCALE_RATIO:g}x)</p>{''.join(charts)}</div>"
    )


def chart_group(title: str, keys: tuple[str, ...], axis: dict, runs: list[Run]) -> str:
    """The chart of ``keys`` over every run that logged them."""
    panels = [
        (run.label, _run_series(run, i, keys), _markers(run, i)) for i, run in enumerate(runs)
    ]
    panels = [p for p in panels if p[1]]
    if not panels:
        return (
            f'<div class="missing">{escape(title)} ({escape(", ".join(keys))}): '
            "not logged by any run</div>"
        )
    styles = [(k, DASHES[j % len(DASHES)]) for j, k in enumerate(keys)]
    return shared_or_own(title, keys[0] if len(keys) == 1 else "", panels, axis, styles)


def curve_group(key: str, series: list[Series], axis: dict) -> str:
    """The chart of one metric with one line (and band) per ablation row."""
    return shared_or_own(key, "", [(s.label, [s], []) for s in series], axis, unit="row")


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _header_row(first: str, runs: list[Run]) -> str:
    cells = "".join(f"<th>{escape(r.label)}</th>" for r in runs)
    return f"<tr><th>{escape(first)}</th>{cells}</tr>"


def summary_table(runs: list[Run]) -> str:
    """Each metric's final value per run, with its best value and step where one is best."""
    rows = ["<table>", _header_row("metric: final (best at step)", runs)]
    for key, best in TABLE:
        cells = []
        for run in runs:
            final, top = final_and_best(run.records, key, best)
            extra = f" ({_cell(top[0])} at {top[1]:.0f})" if top else ""
            cells.append(f"<td>{_cell(final)}{extra}</td>")
        rows.append(f"<tr><td>{escape(key)}</td>{''.join(cells)}</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def phase_table(runs: list[Run]) -> str:
    """Mean seconds per step of each phase, and its share of the step."""
    rows = ["<table>", _header_row("phase: mean s/step (share)", runs)]
    for key in (*PHASES, "time/step"):
        cells = []
        for run in runs:
            ys = [y for y in series_of(run.records, key)[1] if math.isfinite(y)]
            total = [y for y in series_of(run.records, "time/step")[1] if math.isfinite(y)]
            if not ys:
                cells.append("<td>-</td>")
                continue
            mean, whole = sum(ys) / len(ys), sum(total) / len(total) if total else 0.0
            share = f" ({mean / whole:.0%})" if whole > 0 and key != "time/step" else ""
            cells.append(f"<td>{mean:.3g}{share}</td>")
        rows.append(f"<tr><td>{escape(key)}</td>{''.join(cells)}</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _runs_legend(runs: list[Run]) -> str:
    items = []
    for i, run in enumerate(runs):
        steps = max(r["step"] for r in run.records)
        notes = "".join(f' <span class="note">({escape(n)})</span>' for n in run.notes)
        items.append(
            f'<li><span class="sw" style="background:{color(i)}"></span> '
            f"<b>{escape(run.label)}</b>: {steps:g} steps, {escape(str(run.path))}{notes}</li>"
        )
    return f'<ul class="runs">{"".join(items)}</ul>'


def run_sections(runs: list[Run]) -> list[str]:
    """The body of the report over runs: charts, then tables, samples and configs."""
    parts = [_runs_legend(runs)]
    for section, charts in CHARTS.items():
        drawn = [chart_group(t, keys, axis, runs) for t, keys, axis in charts]
        # single charts first, so they fill rows together and each group of panels
        # (one per run) starts a row of its own
        body = "\n".join(sorted(drawn, key=lambda c: c.startswith('<div class="group')))
        parts += [f"<h2>{escape(section)}</h2>", f'<div class="charts">\n{body}\n</div>']
    parts += ["<h2>Alerts</h2>", alerts_table(runs)]
    parts += ["<h2>Final and best values</h2>", summary_table(runs)]
    parts += ["<h2>Time per phase</h2>", phase_table(runs)]
    if len(runs) > 1:
        parts += ["<h2>Config differences</h2>", config_table(runs)]
    samples = samples_section(runs)
    if samples:
        parts += ["<h2>Sample completions</h2>", samples]
    configs = configs_section(runs)
    if configs:
        parts += ["<h2>Configs</h2>", configs]
    return parts


def page(title: str, body: list[str]) -> str:
    """A complete, self-contained HTML document: no script may run, nothing is fetched."""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
            f"<h1>{escape(title)}</h1>",
            *body,
            "</body></html>",
        ]
    )


def write_report(
    run_dirs: list[Path],
    out: Path,
    labels: list[str] | None = None,
    ablation: Path | None = None,
) -> Path:
    """Write the HTML report comparing ``run_dirs`` (and, first, the ablation results in
    the JSON file ``ablation``: ``report.ablation``) to ``out``; returns ``out``.

    Every input is read and checked before the file is written, and the file appears
    whole (written beside ``out``, then renamed) or not at all.
    """
    if not run_dirs and ablation is None:
        raise DapoError("no run directories (or ablation file) to report on")
    labels = list(labels) if labels else default_labels(run_dirs)
    if len(labels) != len(run_dirs):
        raise DapoError(f"{len(labels)} labels given for {len(run_dirs)} run directories")
    body = []
    if ablation is not None:
        from dapo_rl.report.ablation import ablation_sections, load_ablation

        body += ablation_sections(load_ablation(Path(ablation)))
    runs = [load_run(Path(d), label) for d, label in zip(run_dirs, labels, strict=True)]
    if runs:
        body += (["<h2>Runs</h2>"] if ablation is not None else []) + run_sections(runs)
    title = "dapo-rl ablation report" if ablation is not None else "dapo-rl run report"
    return write_page(page(title, body), out)


def write_page(text: str, out: Path) -> Path:
    """``text`` to ``out`` atomically (a temporary file in the same folder, renamed)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
