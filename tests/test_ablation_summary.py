"""benchmarks/ablation_summary.py: the verdicts of several ablations in one table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import ablation_summary  # noqa: E402


def test_copies_each_ablation_and_tables_their_verdicts(tmp_path, capsys):
    verdict = {
        "row": "dapo",
        "vs": "naive_grpo",
        "metric": "eval_gain_pts",
        "expected": "up",
        "claim": "DAPO beats naive GRPO (table 1)",
        "off": 3.0,
        "on": 19.0,
        "diff": 16.0,
        "ci95": [2.0, 30.0],
        "verdict": "as expected",
    }
    folder = tmp_path / "headline"
    folder.mkdir()
    result = {"experiment": "headline", "task": "tight", "seeds": [0, 1], "command": "..."}
    (folder / "ablation.json").write_text(json.dumps({**result, "verdicts": [verdict]}))
    (folder / "ablation.md").write_text("table\n")
    out = tmp_path / "results"
    out.mkdir()
    rc = ablation_summary.main([str(folder), "--name", "t", "--results", str(out)])
    assert rc == 0
    assert (out / "ablation_headline.md").read_text() == "table\n"
    text = (out / "ablation_fixes_t.md").read_text()
    assert "### headline on the tight task: `headline` (2 seeds" in text
    assert "| dapo vs naive_grpo | eval_gain_pts | up: DAPO beats" in text
    assert "| 16.0 [2.0, 30.0] | as expected |" in text
    assert ablation_summary.main([str(tmp_path / "none"), "--name", "t"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
