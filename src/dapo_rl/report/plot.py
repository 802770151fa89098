"""Line charts as inline SVG text, so a report is one self-contained file.

Owns the drawing: axes with round-number ticks whose labels are exact and never repeat,
y-axes that stay inside a metric's bounds (a fraction's axis never leaves [0, 1]), one
polyline per series (a non-finite value breaks the line), shaded interval bands, point
markers for sparse series such as held-out evaluations, triangles along the top edge
where a training-health alert fired, and a legend of line styles under the plot.
Also owns the rule that decides when runs share one y-axis (``own_scales``). Written by
hand rather than with matplotlib to keep the report free of a plotting dependency and
byte-for-byte deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

# Tableau 10: distinct on screen and in greyscale print.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
DASHES = ("", "6 4", "2 3", "8 3 2 3")

WIDTH, HEIGHT = 380, 210
LEFT, RIGHT, TOP, BOTTOM = 50, 12, 28, 34  # margins around the plot area
LEGEND_ROW = 16
MARKER_ROW = 7  # height of one run's strip of alert triangles above the plot area
MARKER_MAX_POINTS = 12  # sparser series (held-out evals) get a marker at every point
# Runs share a y-axis unless the shared axis would be more than this many times the span
# of one run's values: then that run's curve would be a flat line (an entropy of 10.8
# beside a collapse from 0.26 to 0.05), so every run gets its own panel and scale.
SCALE_RATIO = 10.0


@dataclass(frozen=True)
class Series:
    label: str
    xs: list[float]
    ys: list[float]  # non-finite values are gaps
    color: str
    dash: str = ""
    band: tuple[list[float], list[float]] | None = None  # (low, high) at each x: an interval


@dataclass(frozen=True)
class Marker:
    """An event at a step (an alert that fired), drawn as a triangle on the top edge."""

    x: float
    color: str
    text: str
    row: int = 0  # stacking row, one per run, so runs' markers do not cover each other


def own_scales(spans: list[tuple[float, float]], ratio: float = SCALE_RATIO) -> bool:
    """Whether runs with value ranges ``spans`` [(min, max), ...] need one axis each.

    True when the shared axis is more than ``ratio`` times the span of some run that
    varies at all (a constant run is a flat line on any axis, so it forces nothing).
    """
    if len(spans) < 2:
        return False
    shared = max(hi for _, hi in spans) - min(lo for lo, _ in spans)
    return any(0 < hi - lo and shared > ratio * (hi - lo) for lo, hi in spans)


def nice_ticks(
    lo: float,
    hi: float,
    count: int = 5,
    integer: bool = False,
    bounds: tuple[float, float] | None = None,
) -> list[float]:
    """Round-number ticks (1, 2, 2.5, 5 x 10^k apart) covering [lo, hi], inside ``bounds``.

    A constant range is padded to a visible one; the padding and the rounding outwards
    stop at ``bounds`` (a fraction's axis stays in [0, 1], a count's at 0 and above).
    """
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
        if lo > hi:  # every value outside the bounds (a bad record): show the bounds
            lo, hi = bounds
    if hi - lo <= 1e-9 * max(abs(lo), abs(hi), 1e-300):
        pad = abs(lo) * 0.1 or 0.5
        # a constant at or above zero keeps its axis there (a KL of 0 is not "maybe -0.5")
        lo, hi = (max(lo - pad, 0.0) if lo >= 0 else lo - pad), hi + pad
        if bounds is not None:
            lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    if integer:
        step = max(1.0, math.ceil(step))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    last = max(last, first + 1)  # an axis needs two ends (a span far below one step)
    digits = max(0, 3 - math.floor(math.log10(step)))  # drops float noise: 0.6, not 0.6000001
    ticks = [round(k * step, digits) for k in range(first, last + 1)]
    if bounds is not None:  # a bound that is not a multiple of step becomes the end tick
        ticks = sorted({min(max(t, bounds[0]), bounds[1]) for t in ticks})
    return ticks


def tick_labels(ticks: list[float]) -> list[str]:
    """Labels that show each tick exactly, with as few digits as that takes, so no two
    labels of distinct ticks are equal. Large values use k / M, tiny ones an exponent."""
    top = max((abs(t) for t in ticks), default=0.0)
    if 0 < top < 1e-3:
        for d in range(12):
            labels = [f"{t:.{d}e}" if t else "0" for t in ticks]
            if len(set(labels)) == len(labels):
                return labels
        return labels
    scale, suffix = (1e6, "M") if top >= 1e6 else (1e3, "k") if top >= 1e4 else (1.0, "")
    spacing = min((b - a for a, b in zip(ticks, ticks[1:], strict=False)), default=1.0) / scale
    tol = 1e-6 * (spacing or 1.0)
    scaled = [t / scale for t in ticks]
    d = next((d for d in range(12) if all(abs(round(v, d) - v) <= tol for v in scaled)), 12)
    out = []
    for v in scaled:
        text = f"{v:.{d}f}"
        text = "0" if float(text) == 0 else text  # no "-0"
        out.append(text + (suffix if float(text) else ""))
    return out


def decimate(points: list[tuple[float, float]], buckets: int) -> list[tuple[float, float]]:
    """At most about 3 points per x-bucket (a pixel column): each bucket's lowest and highest
    finite point, and its first non-finite one (a gap), in step order. A long run's lines
    look the same, spikes included, from a fraction of the points. Short series pass."""
    if len(points) <= 4 * buckets:
        return points
    x0, width = points[0][0], (points[-1][0] - points[0][0]) or 1.0
    out: list[tuple[float, float]] = []
    bucket: list[tuple[int, tuple[float, float]]] = []
    for p in points:
        b = min(int((p[0] - x0) / width * buckets), buckets - 1)
        if bucket and b != bucket[-1][0]:
            out.extend(_extremes([q for _, q in bucket]))
            bucket = []
        bucket.append((b, p))
    out.extend(_extremes([q for _, q in bucket]))
    return out


def _extremes(bucket: list[tuple[float, float]]) -> list[tuple[float, float]]:
    finite = [i for i, (_, y) in enumerate(bucket) if math.isfinite(y)]
    keep = {i for i, (_, y) in enumerate(bucket) if not math.isfinite(y)}
    keep = {min(keep)} if keep else set()
    if finite:
        keep |= {min(finite, key=lambda i: bucket[i][1]), max(finite, key=lambda i: bucket[i][1])}
    return [bucket[i] for i in sorted(keep)]


def _segments(points: list[tuple[float, ...]]) -> list[list[tuple[float, ...]]]:
    out: list[list[tuple[float, ...]]] = [[]]
    for p in points:
        if all(math.isfinite(v) for v in p[1:]):
            out[-1].append(p)
        elif out[-1]:
            out.append([])
    return [s for s in out if s]


def _finite_ys(series: list[Series]) -> list[float]:
    ys = [y for s in series for y in s.ys if math.isfinite(y)]
    for s in series:
        if s.band:
            ys.extend(y for y in (*s.band[0], *s.band[1]) if math.isfinite(y))
    return ys


@dataclass(frozen=True)
class _Frame:
    xt: list[float]
    yt: list[float]
    top: float  # y of the plot area's top edge (below the title and the alert strip)
    pw: float
    ph: float

    def px(self, x: float) -> float:
        return LEFT + (x - self.xt[0]) / (self.xt[-1] - self.xt[0]) * self.pw

    def py(self, y: float) -> float:
        y = min(max(y, self.yt[0]), self.yt[-1])  # a value outside bounds sits on the edge
        return self.top + self.ph - (y - self.yt[0]) / (self.yt[-1] - self.yt[0]) * self.ph


def _axes(f: _Frame) -> list[str]:
    parts = []
    for y, text in zip(f.yt, tick_labels(f.yt), strict=True):
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + f.pw}" y1="{f.py(y):.1f}" y2="{f.py(y):.1f}" '
            f'stroke="#e4e4e4"/><text x="{LEFT - 5}" y="{f.py(y) + 4:.1f}" '
            f'text-anchor="end" class="ytick">{text}</text>'
        )
    for x, text in zip(f.xt, tick_labels(f.xt), strict=True):
        parts.append(
            f'<line x1="{f.px(x):.1f}" x2="{f.px(x):.1f}" y1="{f.top + f.ph}" '
            f'y2="{f.top + f.ph + 4}" stroke="#555"/><text x="{f.px(x):.1f}" '
            f'y="{f.top + f.ph + 15}" text-anchor="middle" class="xtick">{text}</text>'
        )
    parts.append(
        f'<rect x="{LEFT}" y="{f.top}" width="{f.pw}" height="{f.ph}" fill="none" '
        f'stroke="#555"/><text x="{LEFT + f.pw / 2}" y="{f.top + f.ph + 29}" '
        'text-anchor="middle" fill="#555">step</text>'
    )
    return parts


def _draw_series(s: Series, f: _Frame) -> list[str]:
    parts = []
    if s.band:
        for seg in _segments(list(zip(s.xs, s.band[0], s.band[1], strict=True))):
            upper = [f"{f.px(x):.1f},{f.py(hi):.1f}" for x, _, hi in seg]
            lower = [f"{f.px(x):.1f},{f.py(lo):.1f}" for x, lo, _ in reversed(seg)]
            parts.append(
                f'<polygon class="band" points="{" ".join(upper + lower)}" '
                f'fill="{s.color}" fill-opacity="0.18" stroke="none"/>'
            )
    points = list(zip(s.xs, s.ys, strict=True))
    if not s.band:  # a band's edges would need the same points: bands are short curves
        points = decimate(points, int(f.pw))
    dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
    for seg in _segments(points):
        coords = " ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in seg)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{s.color}" '
            f'stroke-width="1.8"{dash}><title>{escape(s.label)}</title></polyline>'
        )
    if len(points) <= MARKER_MAX_POINTS:
        parts.extend(
            f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="2.8" fill="{s.color}"/>'
            for x, y in points
            if math.isfinite(y)
        )
    return parts


MARKER_TEXTS = 4  # messages listed in one triangle's tooltip


def _draw_markers(markers: list[Marker], f: _Frame) -> list[str]:
    """One triangle per pixel column and run; its tooltip lists the alerts it stands for."""
    columns: dict[tuple, list[Marker]] = {}
    for m in markers:
        if f.xt[0] <= m.x <= f.xt[-1]:
            columns.setdefault((round(f.px(m.x)), m.row, m.color), []).append(m)
    parts = []
    for group in columns.values():
        m = group[0]
        lines = [f"step {g.x:g}: {g.text}" for g in group[:MARKER_TEXTS]]
        if len(group) > MARKER_TEXTS:
            lines.append(f"and {len(group) - MARKER_TEXTS} more")
        x, y = f.px(m.x), TOP - 1 + MARKER_ROW * m.row  # a strip above the plot area
        parts.append(
            f'<path class="alert" d="M{x - 3.5:.1f},{y:.1f} L{x + 3.5:.1f},{y:.1f} '
            f'L{x:.1f},{y + 6:.1f} Z" fill="{m.color}" stroke="#fff" stroke-width="0.5">'
            f"<title>{escape(chr(10).join(lines))}</title></path>"
        )
    return parts


def line_chart(
    series: list[Series],
    title: str,
    subtitle: str = "",
    include: tuple[float, float] | None = None,
    bounds: tuple[float, float] | None = None,
    markers: list[Marker] = (),
    styles: list[tuple[str, str]] = (),
) -> str:
    """An SVG element plotting every series against step.

    ``include``: a y-range the axis always covers (accuracy: 0 to 1); ``bounds``: limits
    the axis never leaves (a fraction: 0 to 1); ``styles``: (label, dash) pairs drawn as
    a legend of line styles when a chart holds several metrics.
    """
    xs = [x for s in series for x, y in zip(s.xs, s.ys, strict=True) if math.isfinite(y)]
    xs += [m.x for m in markers]
    ys = _finite_ys(series) or [0.0, 1.0]
    if include is not None:
        ys = [*ys, *include]
    xt = nice_ticks(min(xs, default=0.0), max(xs, default=1.0), integer=True)
    yt = nice_ticks(min(ys), max(ys), bounds=bounds)
    strip = MARKER_ROW * (1 + max(m.row for m in markers)) if markers else 0
    f = _Frame(xt, yt, TOP + strip, WIDTH - LEFT - RIGHT, HEIGHT - TOP - strip - BOTTOM)
    rows = math.ceil(len(styles) / 2) if len(styles) > 1 else 0
    height = HEIGHT + (LEGEND_ROW * rows + 4 if rows else 0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" '
        'font-size="11">',
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="12.5" '
        f'font-weight="bold" class="title">{escape(title)}<tspan dx="6" font-weight="normal" '
        f'font-size="10.5" fill="#777">{escape(subtitle)}</tspan></text>',
        *_axes(f),
    ]
    for s in series:
        parts.extend(_draw_series(s, f))
    parts.extend(_draw_markers(list(markers), f))
    for i, (label, dash) in enumerate(styles if rows else ()):
        x, y = LEFT + (i % 2) * (f.pw / 2), HEIGHT + 10 + LEGEND_ROW * (i // 2)
        da = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line x1="{x}" x2="{x + 26}" y1="{y - 4}" y2="{y - 4}" stroke="#333" '
            f'stroke-width="1.8"{da}/><text x="{x + 31}" y="{y}" class="legend">'
            f"{escape(label)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)
