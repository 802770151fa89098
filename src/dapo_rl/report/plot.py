"""Line charts as inline SVG text, so a report is one self-contained file.

Owns the drawing: axes with round-number ticks, one polyline per series (a non-finite
value breaks the line), point markers for sparse series such as held-out evaluations,
and a legend under the plot. Written by hand rather than with matplotlib to keep the
report free of a plotting dependency and byte-for-byte deterministic.
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

WIDTH, HEIGHT = 560, 280
LEFT, RIGHT, TOP, BOTTOM = 60, 16, 30, 40  # margins around the plot area
LEGEND_ROW = 18
MARKER_MAX_POINTS = 12  # sparser series (held-out evals) get a marker at every point


@dataclass(frozen=True)
class Series:
    label: str
    xs: list[float]
    ys: list[float]  # non-finite values are gaps
    color: str
    dash: str = ""


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round-number ticks (1, 2, 2.5, 5 x 10^k apart) covering [lo, hi]."""
    if hi <= lo:
        pad = abs(lo) * 0.1 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1.0, math.ceil(step))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    digits = max(0, 2 - math.floor(math.log10(step)))  # drops float noise: 0.6, not 0.6000001
    return [round(k * step, digits) for k in range(first, last + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


def _segments(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    out: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if math.isfinite(y):
            out[-1].append((x, y))
        elif out[-1]:
            out.append([])
    return [s for s in out if s]


def line_chart(series: list[Series], title: str, y_range: tuple[float, float] | None = None) -> str:
    """An SVG element plotting every series against step, with a legend below."""
    finite = [(x, y) for s in series for x, y in zip(s.xs, s.ys, strict=True) if math.isfinite(y)]
    xs = [x for x, _ in finite] or [0.0, 1.0]
    ys = [y for _, y in finite] or [0.0, 1.0]
    if y_range is not None:
        ys = [*ys, *y_range]
    xt = nice_ticks(min(xs), max(xs), integer=True)
    yt = nice_ticks(min(ys), max(ys))
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - xt[0]) / (xt[-1] - xt[0]) * pw

    def py(y: float) -> float:
        return TOP + ph - (y - yt[0]) / (yt[-1] - yt[0]) * ph

    height = HEIGHT + LEGEND_ROW * len(series)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" '
        'font-size="11">',
        f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="13" '
        f'font-weight="bold">{escape(title)}</text>',
    ]
    for y in yt:
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
            'stroke="#e4e4e4"/>'
            f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{_fmt(y)}</text>'
        )
    for x in xt:
        parts.append(
            f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{TOP + ph}" y2="{TOP + ph + 4}" '
            f'stroke="#555"/><text x="{px(x):.1f}" y="{TOP + ph + 16}" '
            f'text-anchor="middle">{_fmt(x)}</text>'
        )
    parts.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#555"/>'
        f'<text x="{LEFT + pw / 2}" y="{TOP + ph + 32}" text-anchor="middle">step</text>'
    )
    for s in series:
        points = list(zip(s.xs, s.ys, strict=True))
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        for seg in _segments(points):
            coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in seg)
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{s.color}" '
                f'stroke-width="2"{dash}/>'
            )
        if len(points) <= MARKER_MAX_POINTS:
            parts.extend(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{s.color}"/>'
                for x, y in points
                if math.isfinite(y)
            )
    for i, s in enumerate(series):
        y = HEIGHT + LEGEND_ROW * i
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + 28}" y1="{y - 4}" y2="{y - 4}" stroke="{s.color}" '
            f'stroke-width="2"{dash}/><text x="{LEFT + 34}" y="{y}" class="legend">'
            f"{escape(s.label)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)
