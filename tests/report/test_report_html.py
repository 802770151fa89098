"""HTML report: content over synthetic runs, error cases, and a headless-Chromium render."""

import json
import math
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from dapo_rl.errors import DapoError
from dapo_rl.report import write_report
from dapo_rl.report.html import default_labels, final_and_best
from dapo_rl.report.plot import PALETTE, Series, line_chart, nice_ticks

CHROMIUM = Path("/usr/bin/chromium")


def write_run(run_dir: Path, steps: int, slope: float, drop: tuple[str, ...] = ()) -> Path:
    """A synthetic run: step 0 eval, then training steps with evals every 5 steps."""
    run_dir.mkdir(parents=True)
    records = [{"step": 0, "eval/acc": 0.2, "eval/n": 50}]
    for s in range(1, steps + 1):
        r = {
            "step": s,
            "reward/mean": -0.6 + slope * s,
            "acc/mean": 0.2 + slope * s / 2,
            "entropy/mean": 0.9 * math.exp(-s / 20),
            "len/mean": 40 + 20 * slope * s,
            "len/truncated_frac": 0.05 - slope * s / 10,
            "clip/high_frac": 0.002 + 1e-4 * s,
            "clip/low_frac": 0.001,
            "ds/zero_var_frac": 0.6 - slope * s,
        }
        if s % 5 == 0:
            r["eval/acc"] = 0.2 + slope * s
        records.append({k: v for k, v in r.items() if k not in drop})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


@pytest.fixture
def two_runs(tmp_path) -> list[Path]:
    a = write_run(tmp_path / "dapo_run", 20, 0.02)
    b = write_run(tmp_path / "grpo_run", 15, 0.01, drop=("clip/low_frac", "entropy/mean"))
    (a / "config.yaml").write_text("preset: dapo\nalgo:\n  eps_high: 0.28\n")
    return [a, b]


def test_report_holds_plots_labels_and_table(two_runs, tmp_path):
    out = write_report(two_runs, tmp_path / "out" / "report.html")
    html = out.read_text()
    assert html.count("<svg") == 6
    for title in ("eval/acc", "reward/mean", "entropy/mean", "len/mean", "ds/zero_var_frac"):
        assert f"({title})</text>" in html
    assert "(clip/high_frac, clip/low_frac)</text>" in html
    assert 'class="legend">dapo_run</text>' in html and 'class="legend">grpo_run</text>' in html
    assert "grpo_run · clip/high_frac" in html and "grpo_run · clip/low_frac" not in html
    # the table: eval/acc of dapo_run ends at 0.2 + 0.02 * 20 = 0.6, its best
    assert "<tr><td>eval/acc</td><td>dapo_run</td><td>0.6</td><td>0.6</td><td>20</td>" in html
    assert "<tr><td>entropy/mean</td><td>grpo_run</td><td>-</td><td>-</td><td>-</td>" in html
    assert "eps_high: 0.28" in html
    assert "<script" not in html and "src=" not in html and "href=" not in html


def test_labels_and_their_count(two_runs, tmp_path):
    html = write_report(two_runs, tmp_path / "r.html", labels=["A<1>", "B"]).read_text()
    assert "A&lt;1&gt;" in html and "dapo_run" not in html.split("<h2>Configs")[0]
    with pytest.raises(DapoError, match="1 labels given for 2 run directories"):
        write_report(two_runs, tmp_path / "r.html", labels=["A"])


def test_metric_logged_by_no_run_is_noted(tmp_path):
    run = write_run(tmp_path / "r", 5, 0.02, drop=("clip/high_frac", "clip/low_frac"))
    html = write_report([run], tmp_path / "r.html").read_text()
    assert html.count("<svg") == 5 and "clip/low_frac): not logged by any run" in html


def test_missing_or_empty_metrics_name_the_directory(tmp_path):
    with pytest.raises(DapoError, match=f"no metrics.jsonl in run directory {tmp_path}"):
        write_report([tmp_path], tmp_path / "r.html")
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(DapoError, match=f"metrics.jsonl in run directory {tmp_path} is empty"):
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


def test_nice_ticks_and_gaps():
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0, 7, integer=True) == [0, 2, 4, 6, 8]
    assert nice_ticks(0.5, 0.5)[0] <= 0.5 <= nice_ticks(0.5, 0.5)[-1]
    svg = line_chart([Series("s", [1, 2, 3, 4], [1.0, 2.0, math.nan, 3.0], "#000")], "t")
    assert svg.count("<polyline") == 2  # a non-finite value breaks the line


def decode_png(data: bytes) -> np.ndarray:
    """Pixels (H, W, channels) of an 8-bit RGB/RGBA non-interlaced PNG; zlib + unfiltering."""
    pos, idat, head = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = head
    assert depth == 8 and color in (2, 6) and interlace == 0, head
    ch = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * ch
    prev, rows = bytearray(stride), []
    for y in range(height):
        f, cur = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        if f == 1:  # Sub
            for i in range(ch, stride):
                cur[i] = (cur[i] + cur[i - ch]) & 255
        elif f == 2:  # Up
            cur = bytearray((a + b) & 255 for a, b in zip(cur, prev, strict=True))
        elif f in (3, 4):  # Average, Paeth
            for i in range(stride):
                a, b = (cur[i - ch] if i >= ch else 0), prev[i]
                if f == 3:
                    pred = (a + b) >> 1
                else:
                    c = prev[i - ch] if i >= ch else 0
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (cur[i] + pred) & 255
        rows.append(bytes(cur))
        prev = cur
    return np.frombuffer(b"".join(rows), np.uint8).reshape(height, width, ch)


def test_report_renders_in_headless_chromium(two_runs, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("chromium not installed: apt-get install chromium")
    out = write_report(two_runs, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2400",
        out.resolve().as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    px = decode_png(shot.read_bytes())[..., :3].astype(int)
    assert px.shape == (2400, 1200, 3)
    assert (px.sum(-1) < 765).mean() > 0.01  # not blank white
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 50  # text, axes, lines, anti-aliasing
    for hex_color in PALETTE[:2]:  # each run's lines drawn, across several chart rows
        rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
        rows = np.nonzero((np.abs(px - rgb).max(-1) <= 40).any(1))[0]
        assert len(rows) > 150 and rows.max() - rows.min() > 600, hex_color


# --- bad metrics files: one error line each, exit 2 -------------------------------------------

BAD_METRICS = {
    "list-line": (b"[1, 2]\n", "metrics.jsonl:1: expected a JSON object, got list"),
    "number-line": (b'{"step": 1}\n5\n', "metrics.jsonl:2: expected a JSON object, got int"),
    "not-json": (b'{"step": 1}\n{"step": \n', "metrics.jsonl:2: not JSON"),
    "not-utf8": (b"\xff\xfe\n", "metrics.jsonl: not UTF-8 text"),
    "deep": (b"[" * 100_000 + b"\n", "metrics.jsonl:1: JSON nested too deeply"),
    "text-step": (b'{"step": "x", "reward/mean": 1}\n', "metrics.jsonl:1: step must be a number"),
}


@pytest.mark.parametrize("name", list(BAD_METRICS))
def test_report_on_a_bad_metrics_file_is_one_error_line(name, tmp_path, capsys):
    from dapo_rl import cli

    content, expected = BAD_METRICS[name]
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
