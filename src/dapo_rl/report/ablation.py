"""Ablation results over seeds: the JSON they are written in, checked, and drawn.

The shape (``docs/results.md`` shows an example; only ``rows``, each row's ``name`` and
``seeds``, and each seed's ``metrics`` or ``curves`` are required)::

    {"title": "...", "command": "dapo ablate --seeds 3 ...",
     "metrics": {"eval_acc_gain": {"label": "held-out accuracy gain", "better": "max"}},
     "rows": [{"name": "naive_grpo",
               "seeds": [{"seed": 0,
                          "metrics": {"eval_acc_gain": 0.04, ...},
                          "curves": {"entropy/mean": {"steps": [1, 2], "values": [0.5, 0.4]}}}],
               "mean": {"eval_acc_gain": 0.05},          # optional, else computed
               "ci95": {"eval_acc_gain": [0.01, 0.09]},  # optional, else computed
               "diff": {"vs": "previous row", "mean": {...}, "ci95": {...}}}]}  # optional

Numbers may be JSON numbers or the strings "nan"/"inf" (as in metrics.jsonl). A row's
``mean``/``ci95``/``diff`` are shown as written when present and otherwise computed here
with ``report.stats`` (t-interval over seeds; differences paired by seed against the row
before). Every value is checked before anything is drawn: one DapoError names the file
and the JSON path of the first bad value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from dapo_rl.errors import DapoError
from dapo_rl.metrics import as_float, parse_json
from dapo_rl.report.html import axis_of, color, curve_group
from dapo_rl.report.plot import Series
from dapo_rl.report.stats import excludes_zero, mean_interval, paired_differences

Interval = tuple[float, float, float]  # (mean, low, high); low/high nan when unknown


@dataclass(frozen=True)
class Row:
    name: str
    seeds: list[str]  # seed ids, in file order
    metrics: dict[str, dict[str, float]]  # metric -> seed id -> value
    curves: dict[str, dict[str, tuple[list[float], list[float]]]]  # key -> seed -> (steps, ys)
    summary: dict[str, Interval] = field(default_factory=dict)  # metric -> mean and ci95
    diff: dict[str, Interval] = field(default_factory=dict)  # metric -> paired difference
    diff_vs: str = ""  # the row the difference is taken against


@dataclass(frozen=True)
class Verdict:
    """One fix's metric against what the paper says (``dapo_rl.ablate.verdicts``)."""

    row: str
    vs: str
    metric: str
    expected: str  # "up" or "down"
    claim: str
    diff: Interval  # row - vs, paired by seed
    verdict: str  # one of VERDICTS


VERDICTS = ("as expected", "opposite", "no clear change")


@dataclass(frozen=True)
class Ablation:
    title: str
    command: str
    labels: dict[str, tuple[str, str | None]]  # metric -> (label, "max" | "min" | None)
    rows: list[Row]
    verdicts: list[Verdict] = field(default_factory=list)


class _Checker:
    """Reads typed values out of parsed JSON, naming the path of the first bad one."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, what: str):
        raise DapoError(f"{self.path}: {where} {what}")

    def obj(self, value, where: str) -> dict:
        return value if isinstance(value, dict) else self.fail(where, "is not an object")

    def seq(self, value, where: str) -> list:
        return value if isinstance(value, list) else self.fail(where, "is not a list")

    def num(self, value, where: str) -> float:
        x = as_float(value)
        return (
            x
            if x is not None and not isinstance(value, bool)
            else self.fail(where, "is not a number")
        )

    def text(self, value, where: str) -> str:
        return value if isinstance(value, str) else self.fail(where, "is not a string")

    def interval(self, value, where: str) -> tuple[float, float]:
        pair = self.seq(value, where)
        if len(pair) != 2:
            self.fail(where, "is not a [low, high] pair")
        return self.num(pair[0], f"{where}[0]"), self.num(pair[1], f"{where}[1]")


def _curve(c: _Checker, value, where: str) -> tuple[list[float], list[float]]:
    curve = c.obj(value, where)
    steps = [
        c.num(x, f"{where}.steps[{i}]")
        for i, x in enumerate(c.seq(curve.get("steps"), f"{where}.steps"))
    ]
    ys = [
        c.num(x, f"{where}.values[{i}]")
        for i, x in enumerate(c.seq(curve.get("values"), f"{where}.values"))
    ]
    if len(steps) != len(ys):
        c.fail(where, f"has {len(steps)} steps but {len(ys)} values")
    if not all(math.isfinite(x) for x in steps):
        c.fail(f"{where}.steps", "holds a non-finite step")
    return steps, ys


def _given(c: _Checker, row: dict, where: str) -> tuple[dict[str, Interval], dict, str]:
    """The row's own mean/ci95 and diff, as written (empty where absent)."""

    def summary(part: dict, at: str) -> dict[str, Interval]:
        means = c.obj(part.get("mean", {}), f"{at}.mean")
        cis = c.obj(part.get("ci95", {}), f"{at}.ci95")
        bounds = {k: c.interval(v, f"{at}.ci95.{k}") for k, v in cis.items()}
        if missing := sorted(set(bounds) - set(means)):
            c.fail(f"{at}.ci95.{missing[0]}", "has no mean")
        nan2 = (math.nan, math.nan)
        return {k: (c.num(v, f"{at}.mean.{k}"), *bounds.get(k, nan2)) for k, v in means.items()}

    diff = c.obj(row.get("diff", {}), f"{where}.diff")
    vs = c.text(diff.get("vs", ""), f"{where}.diff.vs")
    return summary(row, where), summary(diff, f"{where}.diff"), vs


def _seed(c: _Checker, value, where: str, i: int) -> tuple[str, dict, dict]:
    seed = c.obj(value, where)
    sid = str(seed.get("seed", i))
    metrics = {
        k: c.num(v, f"{where}.metrics.{k}")
        for k, v in c.obj(seed.get("metrics", {}), f"{where}.metrics").items()
    }
    curves = {
        k: _curve(c, v, f"{where}.curves.{k}")
        for k, v in c.obj(seed.get("curves", {}), f"{where}.curves").items()
    }
    if not metrics and not curves:
        c.fail(where, "has neither metrics nor curves")
    return sid, metrics, curves


def _row(c: _Checker, value, where: str, before: Row | None) -> Row:
    row = c.obj(value, where)
    name = c.text(row.get("name"), f"{where}.name")
    seeds = c.seq(row.get("seeds"), f"{where}.seeds")
    if not seeds:
        c.fail(f"{where}.seeds", "is empty")
    metrics: dict[str, dict[str, float]] = {}
    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    ids = []
    for i, value in enumerate(seeds):
        sid, m, cv = _seed(c, value, f"{where}.seeds[{i}]", i)
        if sid in ids:
            c.fail(f"{where}.seeds[{i}]", f"repeats seed {sid}")
        ids.append(sid)
        for k, x in m.items():
            metrics.setdefault(k, {})[sid] = x
        for k, xy in cv.items():
            curves.setdefault(k, {})[sid] = xy
    summary, diff, vs = _given(c, row, where)
    for k, by_seed in metrics.items():  # computed where the file gives none
        if k not in summary and (mi := mean_interval(list(by_seed.values()))):
            summary[k] = mi
    if before is not None and not diff:
        vs = before.name
        for k, by_seed in metrics.items():
            d = mean_interval(paired_differences(before.metrics.get(k, {}), by_seed))
            if d:
                diff[k] = d
    return Row(name, ids, metrics, curves, summary, diff, vs)


def load_ablation(path: Path) -> Ablation:
    """The checked contents of an ablation JSON file; DapoError on anything malformed."""
    path = Path(path)
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DapoError(f"no ablation file {path}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DapoError(f"cannot read {path}: {e}") from e
    except json.JSONDecodeError as e:
        raise DapoError(f"{path} is not JSON: {e.msg} (line {e.lineno})") from e
    c = _Checker(path)
    top = c.obj(data, "the top level")
    rows_in = c.seq(top.get("rows"), "rows")
    if not rows_in:
        c.fail("rows", "is empty")
    rows: list[Row] = []
    for i, value in enumerate(rows_in):
        rows.append(_row(c, value, f"rows[{i}]", rows[-1] if rows else None))
    labels = {}
    for k, v in c.obj(top.get("metrics", {}), "metrics").items():
        meta = c.obj(v, f"metrics.{k}")
        better = meta.get("better")
        if better not in (None, "max", "min"):
            c.fail(f"metrics.{k}.better", 'is not "max", "min" or null')
        labels[k] = (c.text(meta.get("label", k), f"metrics.{k}.label"), better)
    title = c.text(top.get("title", "Ablation"), "title")
    given = c.seq(top.get("verdicts", []), "verdicts")
    found = [_verdict(c, v, f"verdicts[{i}]") for i, v in enumerate(given)]
    return Ablation(title, c.text(top.get("command", ""), "command"), labels, rows, found)


def _verdict(c: _Checker, value, where: str) -> Verdict:
    v = c.obj(value, where)
    texts = [c.text(v.get(k), f"{where}.{k}") for k in ("row", "vs", "metric", "claim")]
    expected, verdict = (c.text(v.get(k), f"{where}.{k}") for k in ("expected", "verdict"))
    if expected not in ("up", "down"):
        c.fail(f"{where}.expected", 'is not "up" or "down"')
    if verdict not in VERDICTS:
        c.fail(f"{where}.verdict", f"is not one of {', '.join(VERDICTS)}")
    ci = v.get("ci95")
    low, high = (math.nan, math.nan) if ci is None else c.interval(ci, f"{where}.ci95")
    diff = (c.num(v.get("diff"), f"{where}.diff"), low, high)
    row, vs, metric, claim = texts
    return Verdict(row, vs, metric, expected, claim, diff, verdict)


def curve_band(by_seed: dict[str, tuple[list[float], list[float]]]) -> tuple[list[float], ...]:
    """(steps, mean, low, high) over seeds at every step any seed logged."""
    at: dict[float, list[float]] = {}
    for steps, ys in by_seed.values():
        for x, y in zip(steps, ys, strict=True):
            at.setdefault(x, []).append(y)
    steps = sorted(at)
    stats = [mean_interval(at[x]) or (math.nan,) * 3 for x in steps]
    return steps, *([s[i] for s in stats] for i in range(3))


def _num(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.3g}"


def _interval_cell(mi: Interval | None, signed: bool = False) -> str:
    if mi is None:
        return "<td>-</td>"
    mean, lo, hi = mi
    head = f"{mean:+.3g}" if signed and math.isfinite(mean) else _num(mean)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"<td>{head} <small>(no interval)</small></td>"
    return f"<td>{head} <small>[{_num(lo)}, {_num(hi)}]</small></td>"


def _diff_cell(mi: Interval | None, better: str | None) -> str:
    if mi is None or not excludes_zero(mi[1], mi[2]):
        return _interval_cell(mi, signed=True)
    verdict = ""
    if better:
        verdict = " better" if (mi[0] > 0) == (better == "max") else " worse"
    return (
        _interval_cell(mi, signed=True)
        .replace("<td>", '<td class="yes excludes-zero">', 1)
        .replace("</td>", f" &#10003;{verdict}</td>")
    )


def _metric_keys(ab: Ablation) -> list[str]:
    keys = list(ab.labels)
    for row in ab.rows:
        keys += [k for k in row.summary if k not in keys]
    return keys


def _tables(ab: Ablation) -> list[str]:
    keys = _metric_keys(ab)
    head = "".join(f"<th>{escape(ab.labels.get(k, (k, None))[0])}</th>" for k in keys)
    means = ["<table>", f"<tr><th>row</th><th>seeds</th>{head}</tr>"]
    diffs = ["<table>", f"<tr><th>row</th><th>vs</th>{head}</tr>"]
    for row in ab.rows:
        cells = "".join(_interval_cell(row.summary.get(k)) for k in keys)
        means.append(f"<tr><td>{escape(row.name)}</td><td>{len(row.seeds)}</td>{cells}</tr>")
        if row.diff:
            cells = "".join(
                _diff_cell(row.diff.get(k), ab.labels.get(k, (k, None))[1]) for k in keys
            )
            diffs.append(
                f"<tr><td>{escape(row.name)}</td><td>{escape(row.diff_vs)}</td>{cells}</tr>"
            )
    seeds = ["<table>", f"<tr><th>row</th><th>seed</th>{head}</tr>"]
    for row in ab.rows:
        for s in row.seeds:
            cells = "".join(
                f"<td>{_num(row.metrics.get(k, {}).get(s, math.nan))}</td>" for k in keys
            )
            seeds.append(f"<tr><td>{escape(row.name)}</td><td>{escape(s)}</td>{cells}</tr>")
    return [
        "<h2>Per-row metrics: mean [95% interval] over seeds</h2>",
        "\n".join([*means, "</table>"]),
        "<h2>Paired differences against the row before</h2>",
        "<p>Seed by seed, then a 95% t-interval; &#10003; marks an interval that excludes "
        "zero.</p>",
        "\n".join([*diffs, "</table>"]) if len(diffs) > 2 else "<p>No row has one.</p>",
        "<details><summary>Every seed's numbers</summary>",
        "\n".join([*seeds, "</table>"]),
        "</details>",
    ]


def _curve_charts(ab: Ablation) -> str:
    keys: list[str] = []
    for row in ab.rows:
        keys += [k for k in row.curves if k not in keys]
    charts = []
    for key in keys:
        series = []
        for i, row in enumerate(ab.rows):
            if key in row.curves:
                steps, mean, lo, hi = curve_band(row.curves[key])
                series.append(Series(row.name, steps, mean, color(i), band=(lo, hi)))
        charts.append(curve_group(key, series, axis_of(key)))
    legend = "".join(
        f'<li><span class="sw" style="background:{color(i)}"></span> '
        f"<b>{escape(row.name)}</b>: {len(row.seeds)} seeds</li>"
        for i, row in enumerate(ab.rows)
    )
    return (
        f'<ul class="runs">{legend}</ul><p>Lines: the mean over seeds; bands: its 95% '
        f'interval.</p><div class="charts">{"".join(charts)}</div>'
    )


def _verdict_table(ab: Ablation) -> list[str]:
    lines = [
        "<table>",
        "<tr><th>row</th><th>vs (fix off)</th><th>metric</th><th>the paper</th>"
        "<th>difference</th><th>verdict</th></tr>",
    ]
    for v in ab.verdicts:
        mark = ' class="yes excludes-zero"' if v.verdict == "as expected" else ""
        lines.append(
            f"<tr><td>{escape(v.row)}</td><td>{escape(v.vs)}</td><td>{escape(v.metric)}</td>"
            f"<td>{escape(v.expected)}: {escape(v.claim)}</td>"
            f"{_interval_cell(v.diff, signed=True)}<td{mark}>{escape(v.verdict)}</td></tr>"
        )
    return [
        "<h2>Against what the paper says each fix does</h2>",
        "<p>The fix's row against the fix off, paired by seed, with its 95% interval: "
        "<i>as expected</i> or <i>opposite</i> where the interval excludes zero, "
        "<i>no clear change</i> where it holds zero.</p>",
        "\n".join([*lines, "</table>"]),
    ]


def ablation_sections(ab: Ablation) -> list[str]:
    """The report body of an ablation: mean curves with bands, metrics, differences, and
    each fix against what the paper says it does."""
    parts = [f"<h2>{escape(ab.title)}</h2>"]
    if ab.command:
        parts.append(f"<pre>{escape(ab.command)}</pre>")
    if ab.verdicts:
        parts += _verdict_table(ab)
    if any(row.curves for row in ab.rows):
        parts.append(_curve_charts(ab))
    if any(row.summary for row in ab.rows):
        parts += _tables(ab)
    return parts
