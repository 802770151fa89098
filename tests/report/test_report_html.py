"""HTML report over synthetic runs: charts and scales, alerts, config diff, samples, errors."""

import json
import re
from pathlib import Path

import pytest
from report_runs import HOSTILE, write_run

from dapo_rl.cli import main
from dapo_rl.errors import DapoError
from dapo_rl.report import write_report
from dapo_rl.report.html import default_labels, final_and_best
from dapo_rl.report.runs import alert_kind, read_config


def svgs(html: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", html, flags=re.S)


def chart_titled(html: str, title: str) -> str:
    found = [s for s in svgs(html) if f'class="title">{title}<' in s]
    assert len(found) == 1, title
    return found[0]


def test_report_holds_every_section(two_runs, tmp_path):
    html = write_report(two_runs, tmp_path / "out" / "report.html").read_text()
    for title in ("Held-out accuracy", "Training accuracy", "Reward", "Clip fractions"):
        chart_titled(html, title)
    for h in ("Learning", "Policy and update", "Groups and lengths", "Cost", "Alerts"):
        assert f"<h2>{h}</h2>" in html
    assert "KL (kl/mean, mismatch/kl): not logged by any run" in html
    assert "<b>dapo_run</b>: 20 steps" in html and "<b>grpo_run</b>: 15 steps" in html
    # the final/best table: eval/acc of dapo_run ends at 0.2 + 0.02 * 20 = 0.6, its best
    assert "<tr><td>eval/acc</td><td>0.6 (0.6 at 20)</td><td>0.35 (0.35 at 15)</td>" in html
    assert "<tr><td>entropy/mean</td><td>0.3311</td><td>-</td></tr>" in html  # 0.9 e^-1
    # time per phase: generate is 2 of a 4 s step
    assert "<tr><td>time/generate</td><td>2 (50%)</td><td>2 (50%)</td></tr>" in html
    assert "<script" not in html and "src=" not in html and "href=" not in html


def test_accuracy_axis_is_whole_and_fraction_axes_stay_in_0_1(two_runs, tmp_path):
    html = write_report(two_runs, tmp_path / "r.html").read_text()
    for svg in svgs(html):
        title = re.search(r'class="title">([^<]*)<', svg).group(1)
        ys = [float(v) for v in re.findall(r'class="ytick">([-\d.]+)<', svg)]
        if title in ("Held-out accuracy", "Training accuracy", "All-correct vs all-wrong groups"):
            assert ys[0] == 0.0 and ys[-1] == 1.0, title
        if title in ("Clip fractions", "Truncated completions"):
            assert 0.0 <= ys[0] and ys[-1] <= 1.0 and ys[-1] < 0.5, (title, ys)


def test_tick_labels_of_every_chart_are_unique(two_runs, tmp_path):
    html = write_report(two_runs, tmp_path / "r.html").read_text()
    for svg in svgs(html):
        for kind in ("ytick", "xtick"):
            labels = re.findall(rf'class="{kind}">([^<]*)<', svg)
            assert len(labels) >= 2 and len(set(labels)) == len(labels), labels


def test_runs_of_very_different_range_get_their_own_scales(tmp_path):
    # one run's entropy near 10.8 (a random model) beside another's collapse 0.26 -> 0.05
    big = write_run(tmp_path / "random_init", 10, 0.02, entropy=10.8)
    small = write_run(tmp_path / "trained", 10, 0.02, entropy=0.26)
    html = write_report([big, small], tmp_path / "r.html").read_text()
    group = re.search(r'<div class="group own-scales"><p><b>Entropy</b>.*?</div>', html, re.S)
    assert group, "entropy not split into one panel per run"
    panels = svgs(group.group(0))
    assert [re.search(r'class="title">([^<]*)<', p).group(1) for p in panels] == [
        "random_init",
        "trained",
    ]
    top_small = float(re.findall(r'class="ytick">([-\d.]+)<', panels[1])[-1])
    assert top_small < 1.0  # its own axis: the collapse fills the panel
    # comparable rewards share one chart
    chart_titled(html, "Reward")


def test_alert_markers_and_table(two_runs, tmp_path):
    html = write_report(two_runs, tmp_path / "r.html").read_text()
    reward = chart_titled(html, "Reward")
    assert reward.count('class="alert"') == 3  # steps 7, 8, 9 of dapo_run
    assert "<title>step 7: entropy fell to 0.07, 20% of its early mean &lt;b&gt;</title>" in reward
    row = "<tr><td>dapo_run</td><td>7–9</td><td>3</td>"
    assert row in html and "its early mean &lt;b&gt;</td>" in html
    assert alert_kind("entropy fell to 0.07, 20% of its early mean") == "entropy fell to"


def test_config_diff_shows_only_differing_keys(two_runs, tmp_path):
    html = write_report(two_runs, tmp_path / "r.html").read_text()
    diff = re.search(r"<h2>Config differences</h2>\n<table>.*?</table>", html, re.S).group(0)
    assert re.findall(r'<tr class="diff"><td>([^<]*)</td>', diff) == ["algo.eps_high", "preset"]
    assert "<td>algo.eps_high</td><td>0.28</td><td>0.2</td>" in diff
    assert "eps_low" not in diff and "run.dir" not in diff
    nested = tmp_path / "nested"
    nested.mkdir()
    (nested / "config.yaml").write_text("a:\n  b: 1\n  c: [1, 2]\nd: null\n")
    assert read_config(nested / "config.yaml", []) == {"a.b": "1", "a.c": "[1, 2]", "d": "null"}
    notes = []
    (nested / "config.yaml").write_text("- a list\n")
    assert read_config(nested / "config.yaml", notes) == {} and notes == [
        "config.yaml is not a mapping"
    ]


def test_sample_completions_are_escaped_and_bounded(two_runs, tmp_path):
    rows = [
        {
            "step": s,
            "prompt": f"p{s}",
            "completion": f"c{s}.{i} " + HOSTILE,
            "reward": 1.0,
            "acc": 1.0,
            "length": 7,
            "truncated": False,
        }
        for s in (1, 2, 3)
        for i in range(5)
    ]
    lines = [json.dumps(r) for r in rows] + ["{not json", "[1, 2]", json.dumps({"step": 1})]
    (two_runs[0] / "samples.jsonl").write_text("\n".join(lines) + "\n")
    html = write_report(two_runs, tmp_path / "r.html").read_text()
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in html
    # the first and the last step, three completions each
    shown = re.findall(r"<pre>(c\d\.\d) ", html)
    assert shown == ["c1.0", "c1.1", "c1.2", "c3.0", "c3.1", "c3.2"]
    assert "samples.jsonl: 3 malformed rows skipped" in html
    assert "default-src &#x27;none&#x27;" in html or "default-src 'none'" in html


def test_labels_and_their_count(two_runs, tmp_path):
    html = write_report(two_runs, tmp_path / "r.html", labels=["A<1>", "B"]).read_text()
    assert "A&lt;1&gt;" in html and "A<1>" not in html
    with pytest.raises(DapoError, match="1 labels given for 2 run directories"):
        write_report(two_runs, tmp_path / "r.html", labels=["A"])


BAD_METRICS = {
    "": "metrics.jsonl in run directory {d} is empty",
    '{"step": 1}\n{oops\n': "{d}/metrics.jsonl:2: not JSON",
    "[1, 2]\n": "{d}/metrics.jsonl:1: expected a JSON object, got list",
    '{"step": "one"}\n': "{d}/metrics.jsonl:1: step must be a number",
    '{"step": "nan"}\n': "{d}/metrics.jsonl:1: step must be a number",
    '{"step": 1' + "0" * 5000 + "}\n": "{d}/metrics.jsonl:1: step must be a number",
}


def test_huge_integers_are_values_not_crashes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    huge = "9" * 5000  # Python refuses int("9" * 5000); read as a float, it is inf
    (run / "metrics.jsonl").write_text(f'{{"step": 1, "len/mean": {huge}}}\n{{"step": 2}}\n')
    (run / "samples.jsonl").write_text(f'{{"step": 1, "completion": "a", "length": {huge}}}\n')
    html = write_report([run], tmp_path / "r.html").read_text()
    assert "<td>inf</td>" in html  # the sample's length, shown as written


@pytest.mark.parametrize("text", list(BAD_METRICS))
def test_bad_metrics_file_is_one_error_line_and_no_report(text, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(text)
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert BAD_METRICS[text].format(d=run) in err
    assert not out.exists() and list(tmp_path.iterdir()) == [run]


def test_missing_or_binary_metrics_name_the_file(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert f"error: no metrics.jsonl in run directory {tmp_path}" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 1}\n\xff\xfe\n')
    with pytest.raises(DapoError, match="metrics.jsonl: not UTF-8 text"):
        write_report([tmp_path], tmp_path / "r.html")


def test_colliding_directory_names_get_their_parent():
    assert default_labels([Path("a/seed0"), Path("b/seed0"), Path("c/x")]) == [
        "a/seed0",
        "b/seed0",
        "x",
    ]


def test_final_and_best_skip_non_finite():
    records = [{"step": 1, "m": 0.3}, {"step": 2, "m": 0.7}, {"step": 3, "m": 0.5}, {"step": 4}]
    records.append({"step": 5, "m": "nan"})
    assert final_and_best(records, "m", "max") == (0.5, (0.7, 2.0))
    assert final_and_best(records, "m", "min") == (0.5, (0.3, 1.0))
    assert final_and_best(records, "m", None) == (0.5, None)
    assert final_and_best(records, "absent", "max") == (None, None)


# --- bad metrics files: one error line each, exit 2 -------------------------------------------

BAD_METRIC_BYTES = {
    "list-line": (b"[1, 2]\n", "metrics.jsonl:1: expected a JSON object, got list"),
    "number-line": (b'{"step": 1}\n5\n', "metrics.jsonl:2: expected a JSON object, got int"),
    "not-json": (b'{"step": 1}\n{"step": \n', "metrics.jsonl:2: not JSON"),
    "not-utf8": (b"\xff\xfe\n", "metrics.jsonl: not UTF-8 text"),
    "deep": (b"[" * 100_000 + b"\n", "metrics.jsonl:1: JSON nested too deeply"),
    "text-step": (b'{"step": "x", "reward/mean": 1}\n', "metrics.jsonl:1: step must be a number"),
}


@pytest.mark.parametrize("name", list(BAD_METRIC_BYTES))
def test_report_on_a_bad_metrics_file_is_one_error_line(name, tmp_path, capsys):
    from dapo_rl import cli

    content, expected = BAD_METRIC_BYTES[name]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_bytes(content)
    rc = cli.main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert expected in err
    assert not (tmp_path / "r.html").exists()


def test_report_on_a_fifo_does_not_block(tmp_path):
    import os

    (tmp_path / "run").mkdir()
    os.mkfifo(tmp_path / "run" / "metrics.jsonl")
    with pytest.raises(DapoError, match="no metrics.jsonl"):
        write_report([tmp_path / "run"], tmp_path / "r.html")
