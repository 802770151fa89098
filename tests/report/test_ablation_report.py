"""Ablation JSON: checked input, mean curves with bands, intervals, differences that
exclude zero."""

import json
import math
import re

import pytest
from report_runs import ablation_doc

from dapo_rl.cli import main
from dapo_rl.errors import DapoError
from dapo_rl.report import write_report
from dapo_rl.report.ablation import curve_band, load_ablation


def write_doc(tmp_path, doc) -> str:
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps(doc))
    return path


def render(tmp_path, doc, *run_dirs) -> str:
    return write_report(list(run_dirs), tmp_path / "r.html", ablation=write_doc(tmp_path, doc))


def test_means_intervals_and_paired_differences_are_computed(tmp_path):
    ab = load_ablation(write_doc(tmp_path, ablation_doc()))
    a, b, c = ab.rows
    assert a.seeds == ["0", "1", "2"] and not a.diff
    mean, lo, hi = a.summary["eval_acc_gain"]  # 0.12 +- 0.0496833 (test_stats)
    assert (mean, lo, hi) == pytest.approx((0.12, 0.0703167, 0.1696833), abs=1e-6)
    # B - A seed by seed: 0.05, 0.06, 0.07 -> 0.06 +- 4.3027 * 0.01 / sqrt(3) = 0.0248417
    assert b.diff_vs == "A"
    assert b.diff["eval_acc_gain"] == pytest.approx((0.06, 0.0351583, 0.0848417), abs=1e-6)
    d_mean, d_lo, d_hi = c.diff["eval_acc_gain"]  # 0.05, -0.02, -0.01: straddles zero
    assert d_lo < 0 < d_hi and d_mean == pytest.approx(0.02 / 3)


def test_report_shows_bands_tables_and_which_differences_exclude_zero(tmp_path):
    html = render(tmp_path, ablation_doc()).read_text()
    assert html.count('class="band"') == 3  # one entropy band per row
    assert "<h2>Cumulative ablation</h2>" in html and "dapo ablate --seeds 3" in html
    assert "<th>held-out accuracy gain</th>" in html and "<th>trunc_frac</th>" in html
    assert "<tr><td>A</td><td>3</td><td>0.12 <small>[0.0703, 0.17]</small></td>" in html
    marked = re.findall(r'<tr><td>(\w)</td><td>(\w)</td><td class="yes excludes-zero">', html)
    assert marked == [("B", "A")]  # only B's gain over A excludes zero
    assert "+0.06 <small>[0.0352, 0.0848]</small> &#10003; better</td>" in html
    assert html.count("excludes-zero") == 1  # C vs B and every trunc_frac difference do not


def test_values_written_in_the_file_are_shown_as_written(tmp_path):
    doc = ablation_doc()
    doc["rows"][1]["mean"] = {"eval_acc_gain": 0.5}
    doc["rows"][1]["ci95"] = {"eval_acc_gain": [0.4, 0.6]}
    doc["rows"][1]["diff"] = {"vs": "A", "mean": {"eval_acc_gain": -0.2},
                              "ci95": {"eval_acc_gain": [-0.3, -0.1]}}  # fmt: skip
    html = render(tmp_path, doc).read_text()
    assert "<tr><td>B</td><td>3</td><td>0.5 <small>[0.4, 0.6]</small></td>" in html
    assert "-0.2 <small>[-0.3, -0.1]</small> &#10003; worse</td>" in html


def test_one_seed_has_no_interval_and_no_mark(tmp_path):
    doc = ablation_doc()
    for row in doc["rows"]:
        row["seeds"] = row["seeds"][:1]
    html = render(tmp_path, doc).read_text()
    assert "0.1 <small>(no interval)</small>" in html and "excludes-zero" not in html
    assert 'class="band"' not in html  # nothing to shade


def test_curve_band_over_seeds_with_different_steps():
    steps, mean, lo, hi = curve_band({"0": ([1, 2], [1.0, 2.0]), "1": ([1, 3], [3.0, 5.0])})
    assert steps == [1, 2, 3] and mean == [2.0, 2.0, 5.0]
    # step 1: values 1 and 3, s = sqrt(2), half = 12.7062 * sqrt(2) / sqrt(2) = 12.7062
    assert lo[0] == pytest.approx(2.0 - 12.7062) and hi[0] == pytest.approx(2.0 + 12.7062)
    assert all(x != x for x in (lo[1], hi[1], lo[2], hi[2]))  # one seed: no interval


def test_rows_of_very_different_range_get_their_own_panels(tmp_path):
    doc = ablation_doc()
    for seed in doc["rows"][0]["seeds"]:  # a random-init row: entropy near 10.8
        curve = seed["curves"]["entropy/mean"]
        curve["values"] = [10.8 + 0.001 * i for i in range(len(curve["values"]))]
    html = render(tmp_path, doc).read_text()
    assert '<div class="group own-scales"><p><b>entropy/mean</b>' in html
    assert html.count('class="band"') == 3


def test_ablation_and_runs_in_one_report(tmp_path, two_runs):
    html = render(tmp_path, ablation_doc(), *two_runs).read_text()
    assert html.index("Cumulative ablation") < html.index("<h2>Runs</h2>")
    assert "<b>dapo_run</b>: 20 steps" in html and "<title>dapo-rl ablation report</title>" in html


def test_names_from_the_file_are_escaped(tmp_path):
    doc = ablation_doc()
    doc["rows"][0]["name"] = "<script>x</script>"
    doc["title"] = "<b>t</b>"
    html = render(tmp_path, doc).read_text()
    assert "<script" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<h2>&lt;b&gt;t&lt;/b&gt;</h2>" in html


VERDICT = {
    "row": "B",
    "vs": "A",
    "metric": "eval_acc_gain",
    "expected": "up",
    "claim": "<i>learns</i> faster",
    "diff": 0.06,
    "ci95": [0.035, 0.085],
    "verdict": "as expected",
}


def test_verdicts_are_shown_first_and_escaped(tmp_path):
    doc = {
        **ablation_doc(),
        "verdicts": [VERDICT, {**VERDICT, "ci95": None, "verdict": "no clear change"}],
    }
    ab = load_ablation(write_doc(tmp_path, doc))
    assert ab.verdicts[0].diff == (0.06, 0.035, 0.085) and math.isnan(ab.verdicts[1].diff[1])
    html = render(tmp_path, doc).read_text()
    assert html.index("Against what the paper says") < html.index("Per-row metrics")
    assert "<td>up: &lt;i&gt;learns&lt;/i&gt; faster</td>" in html
    assert (
        '+0.06 <small>[0.035, 0.085]</small></td><td class="yes excludes-zero">as expected' in html
    )
    assert "+0.06 <small>(no interval)</small></td><td>no clear change</td>" in html


def mutate(doc, change):
    change(doc)
    return doc


BAD = [
    (lambda d: d.pop("rows"), "rows is not a list"),
    (lambda d: d.update(rows=[]), "rows is empty"),
    (lambda d: d["rows"][1].pop("name"), "rows[1].name is not a string"),
    (lambda d: d["rows"][0].update(seeds=[]), "rows[0].seeds is empty"),
    (
        lambda d: d["rows"][2]["seeds"][1]["metrics"].update(eval_acc_gain="high"),
        "rows[2].seeds[1].metrics.eval_acc_gain is not a number",
    ),
    (
        lambda d: d["rows"][0]["seeds"][0]["curves"]["entropy/mean"]["values"].pop(),
        "rows[0].seeds[0].curves.entropy/mean has 10 steps but 9 values",
    ),
    (lambda d: d["rows"][0]["seeds"][1].update(seed=0), "rows[0].seeds[1] repeats seed 0"),
    (lambda d: d["rows"][0].update(ci95={"x": [1]}), "rows[0].ci95.x is not a [low, high] pair"),
    (lambda d: d["rows"][0]["seeds"][0].update(metrics={}, curves={}), "neither metrics nor"),
    (lambda d: d["metrics"]["eval_acc_gain"].update(better="up"), 'is not "max", "min"'),
    (lambda d: d.update(verdicts=[{**VERDICT, "verdict": "yes"}]), "verdicts[0].verdict is not"),
    (lambda d: d.update(verdicts=[{**VERDICT, "expected": 1}]), "verdicts[0].expected is not a"),
    (lambda d: d.update(verdicts=[{**VERDICT, "diff": "big"}]), "verdicts[0].diff is not a num"),
    (lambda d: d.update(verdicts=[5]), "verdicts[0] is not an object"),
    (lambda d: d.update(verdicts={"a": 1}), "verdicts is not a list"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m for _, m in BAD])
def test_bad_ablation_file_is_one_error_line_naming_the_value(change, message, tmp_path, capsys):
    path = write_doc(tmp_path, mutate(ablation_doc(), change))
    out = tmp_path / "r.html"
    assert main(["report", "--ablation", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ") and message in err
    assert not out.exists()


def test_unreadable_ablation_files(tmp_path):
    with pytest.raises(DapoError, match="no ablation file"):
        load_ablation(tmp_path / "absent.json")
    (tmp_path / "a.json").write_text("{rows: 1")
    with pytest.raises(DapoError, match="a.json is not JSON"):
        load_ablation(tmp_path / "a.json")
    with pytest.raises(DapoError, match="no run directories"):
        write_report([], tmp_path / "r.html")
