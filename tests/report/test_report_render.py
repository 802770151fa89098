"""The report as a browser shows it: headless Chromium renders the page to pixels and
to its live DOM, so a chart that does not draw or a completion that runs are caught."""

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from report_runs import HOSTILE, read_png

from dapo_rl.report import write_report
from dapo_rl.report.plot import PALETTE

CHROMIUM = Path("/usr/bin/chromium")


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    if not CHROMIUM.exists():
        pytest.skip("chromium not installed: apt-get install chromium (scripts/setup.sh does)")
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
        *args,
        page.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def with_hostile_samples(run: Path) -> None:
    row = {"step": 1, "prompt": "2+2?", "completion": HOSTILE, "reward": 1, "acc": 1,
           "length": 9, "truncated": False}  # fmt: skip
    (run / "samples.jsonl").write_text(json.dumps(row) + "\n")


def test_report_renders_in_headless_chromium(two_runs, tmp_path):
    with_hostile_samples(two_runs[0])
    out = write_report(two_runs, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    chromium(tmp_path, out, f"--screenshot={shot}", "--window-size=1240,2400")
    assert shot.is_file(), "chromium wrote no screenshot"
    px = read_png(shot)[..., :3].astype(int)
    assert px.shape == (2400, 1240, 3)
    assert (px.sum(-1) < 765).mean() > 0.01  # not blank white
    colours = (px[..., 0] << 16) | (px[..., 1] << 8) | px[..., 2]
    assert len(np.unique(colours)) > 50  # text, axes, lines, anti-aliasing
    for hex_color in PALETTE[:2]:  # each run's lines drawn, across several chart rows
        rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
        rows = np.nonzero((np.abs(px - rgb).max(-1) <= 40).any(1))[0]
        assert len(rows) > 150 and rows.max() - rows.min() > 600, hex_color


def test_a_hostile_completion_stays_text_in_the_browser(two_runs, tmp_path):
    with_hostile_samples(two_runs[0])
    out = write_report(two_runs, tmp_path / "report.html")
    dom = chromium(tmp_path, out, "--dump-dom").stdout
    assert "<title>dapo-rl run report</title>" in dom  # the script did not rename the page
    assert not re.search(r"<script|<img", dom, re.I)  # no element made from model output
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom  # shown as text
