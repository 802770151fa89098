"""SVG charts: ticks, their labels, bounded axes, the shared-or-own scale rule, bands, alerts."""

import math
import re

from hypothesis import given
from hypothesis import strategies as st

from dapo_rl.report.plot import (
    Marker,
    Series,
    decimate,
    line_chart,
    nice_ticks,
    own_scales,
    tick_labels,
)


def test_nice_ticks_hand_computed():
    # (1 - 0) / 5 = 0.2 -> step 0.2
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    # 7 / 5 = 1.4 -> step 2 (1 is too small), rounded out to 8
    assert nice_ticks(0, 7, integer=True) == [0, 2, 4, 6, 8]
    # 0.21 / 5 = 0.042 -> step 0.05; 0.05 .. 0.26 -> 0.05 .. 0.30
    assert nice_ticks(0.05, 0.26) == [0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    assert nice_ticks(0.5, 0.5)[0] <= 0.5 <= nice_ticks(0.5, 0.5)[-1]


def test_a_fraction_axis_stays_in_0_1():
    # a constant 0 would pad to [-0.5, 0.5] and a constant 1 to [0.9, 1.1]: bounds cut both
    assert nice_ticks(0.0, 0.0, bounds=(0, 1))[0] == 0.0
    assert nice_ticks(1.0, 1.0, bounds=(0, 1))[-1] == 1.0
    for lo, hi in [(0.0, 0.0), (1.0, 1.0), (0.001, 0.003), (0.95, 1.0), (0.0, 1.0), (-3.0, 7.0)]:
        ticks = nice_ticks(lo, hi, bounds=(0.0, 1.0))
        assert 0.0 <= ticks[0] and ticks[-1] <= 1.0, (lo, hi, ticks)
    # a value outside the bounds (a bad record) is drawn on the edge, not beyond it
    svg = line_chart([Series("s", [0, 1], [0.5, -2.0], "#000")], "t", bounds=(0.0, 1.0))
    ys = [float(y) for y in re.findall(r'class="ytick">([-\d.]+)<', svg)]
    assert min(ys) == 0.0 and max(ys) <= 1.0


def test_a_constant_non_negative_metric_keeps_its_axis_at_zero_or_above():
    assert nice_ticks(0.0, 0.0)[0] == 0.0  # a KL of exactly 0 is not "maybe -0.5"
    assert nice_ticks(-1.0, -1.0)[0] < -1.0 < nice_ticks(-1.0, -1.0)[-1]


def test_tick_labels_exact_and_unique():
    assert tick_labels([0.0, 0.25, 0.5, 0.75, 1.0]) == ["0", "0.25", "0.50", "0.75", "1.00"]
    assert tick_labels([10.79, 10.795, 10.8]) == ["10.790", "10.795", "10.800"]
    assert tick_labels([0, 50000, 100000]) == ["0", "50k", "100k"]
    assert tick_labels([0, 2.5e6, 5e6]) == ["0", "2.5M", "5.0M"]
    assert tick_labels([0.0, 1e-5, 2e-5]) == ["0", "1e-05", "2e-05"]
    assert tick_labels([-1.0, 0.0, 1.0]) == ["-1", "0", "1"]


@given(
    st.floats(-1e7, 1e7, allow_nan=False),
    st.floats(0, 1e7, allow_nan=False),
    st.booleans(),
)
def test_tick_labels_never_repeat(lo, width, integer):
    ticks = nice_ticks(lo, lo + width, integer=integer)
    labels = tick_labels(ticks)
    assert len(set(labels)) == len(labels), (ticks, labels)
    # they cover the range, up to a sliver of one tick step (rounding tolerance)
    slack = 1e-6 * (ticks[1] - ticks[0])
    assert ticks[0] <= lo + slack and ticks[-1] >= lo + width - slack


def test_own_scales_when_one_run_would_be_flattened():
    # entropy 10.78..10.81 beside a collapse 0.26 -> 0.05: shared axis 10.76 > 10 * 0.03
    assert own_scales([(10.78, 10.81), (0.05, 0.26)])
    # rewards -1..0.5 and -0.8..0.2: shared span 1.5 < 10 * 1.0
    assert not own_scales([(-1.0, 0.5), (-0.8, 0.2)])
    # a constant run forces nothing (a flat line on any axis); one run never splits
    assert not own_scales([(0.0, 1.0), (5.0, 5.0)])
    assert not own_scales([(0.0, 1e-9)])
    # the boundary: shared 1.0 is exactly 10x a span of 0.1 -> still shared; beyond it splits
    assert not own_scales([(0.0, 1.0), (0.0, 0.1)])
    assert own_scales([(0.0, 1.0), (0.0, 0.099)])


def test_gaps_bands_and_alert_markers():
    nan = math.nan
    s = Series(
        "s", [1, 2, 3, 4], [1.0, 2.0, nan, 3.0], "#123456", band=([0, 1, 1, 2], [2, 3, 3, 4])
    )
    alerts = [Marker(2, "#123456", "entropy <collapsed>"), Marker(3, "#654321", "x", row=1)]
    svg = line_chart([s], "t", markers=alerts)
    assert svg.count("<polyline") == 2  # a non-finite value breaks the line
    assert svg.count('class="band"') == 1 and 'fill="#123456" fill-opacity' in svg
    assert svg.count('class="alert"') == 2
    assert "<title>step 2: entropy &lt;collapsed&gt;</title>" in svg
    # the second run's triangles sit one strip lower; both above the plot area
    tops = [float(y) for y in re.findall(r'class="alert" d="M[\d.]+,([\d.]+)', svg)]
    plot_top = float(re.search(r'<rect x="\d+" y="([\d.]+)"', svg).group(1))
    assert tops[0] < tops[1] and max(tops) + 6 <= plot_top
    # the band's low and high widen the axis: 0 and 4 are on it
    ys = [float(y) for y in re.findall(r'class="ytick">([-\d.]+)<', svg)]
    assert ys[0] <= 0 and ys[-1] >= 4


def test_style_legend_only_for_several_metrics():
    one = line_chart([Series("a", [0, 1], [0, 1], "#000")], "t", styles=[("m", "")])
    two = line_chart([Series("a", [0, 1], [0, 1], "#000")], "t", styles=[("m", ""), ("n", "6 4")])
    assert 'class="legend"' not in one
    assert 'class="legend">m</text>' in two and 'class="legend">n</text>' in two


def test_decimate_keeps_extremes_and_gaps():
    assert decimate([(0, 1.0), (1, 2.0)], 10) == [(0, 1.0), (1, 2.0)]  # short: untouched
    points = [(float(x), 0.0) for x in range(100_000)]
    points[31_337] = (31_337.0, 5.0)  # one spike
    points[77_000] = (77_000.0, -3.0)  # one dip
    points[50_000] = (50_000.0, math.nan)  # one gap
    out = decimate(points, 300)
    assert len(out) <= 3 * 300
    assert (31_337.0, 5.0) in out and (77_000.0, -3.0) in out
    assert any(x == 50_000.0 and math.isnan(y) for x, y in out)
    assert [x for x, _ in out] == sorted(x for x, _ in out)
    svg = line_chart([Series("s", [x for x, _ in points], [y for _, y in points], "#000")], "t")
    assert len(svg) < 60_000 and svg.count("<polyline") == 2  # the gap still breaks it


def test_alerts_in_one_pixel_column_share_a_triangle():
    alerts = [Marker(x, "#000", f"alert {x}") for x in range(1000)]
    svg = line_chart([Series("s", [0, 999], [0.0, 1.0], "#000")], "t", markers=alerts)
    n = svg.count('class="alert"')
    assert 100 < n <= 400  # about one per pixel column of the ~318-pixel plot
    same_step = [Marker(5, "#000", f"rule {i}") for i in range(6)]
    svg = line_chart([Series("s", [0, 9], [0.0, 1.0], "#000")], "t", markers=same_step)
    assert svg.count('class="alert"') == 1
    assert (
        "<title>step 5: rule 0\nstep 5: rule 1\nstep 5: rule 2\nstep 5: rule 3\nand 2 more<" in svg
    )
