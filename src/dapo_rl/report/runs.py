"""What a report reads from a run directory, checked as hostile input.

Owns the reading of ``metrics.jsonl`` (required: every line one JSON object with a
numeric ``step``; anything else is one DapoError naming the file and line),
``config.yaml`` (optional: its dotted keys, for the diff between runs) and
``samples.jsonl`` (optional: the sample completions of the first and last step that has
any). Optional files never stop a report: a broken one becomes a note on the page.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from dapo_rl import metrics
from dapo_rl.config import flatten
from dapo_rl.errors import DapoError
from dapo_rl.metrics import as_float, parse_json

SAMPLES_PER_STEP = 3  # completions shown for each of the first and the last sampled step
SAMPLE_FIELDS = ("step", "prompt", "completion", "reward", "acc", "length", "truncated")


@dataclass(frozen=True)
class Run:
    label: str
    path: Path
    records: list[dict]  # metric records sorted by step
    config: dict[str, str] = field(default_factory=dict)  # dotted key -> YAML text of value
    samples: list[dict] = field(default_factory=list)  # rows of samples.jsonl shown
    notes: list[str] = field(default_factory=list)  # optional files that could not be read


def read_records(path: Path) -> list[dict]:
    """The metric records of ``path``, sorted by step; DapoError on any malformed line."""
    records = [{**r, "step": float(r.get("step", 0))} for r in metrics.read_records(path)]
    return sorted(records, key=lambda r: r["step"])


def load_run(run_dir: Path, label: str) -> Run:
    """The records, config and samples of one run; DapoError when there are no records."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise DapoError(f"no metrics.jsonl in run directory {run_dir}")
    records = read_records(path)
    if not records:
        raise DapoError(f"metrics.jsonl in run directory {run_dir} is empty")
    notes: list[str] = []
    config = read_config(run_dir / "config.yaml", notes)
    samples = read_samples(run_dir / "samples.jsonl", notes)
    return Run(label, run_dir, records, config, samples, notes)


def read_config(path: Path, notes: list[str]) -> dict[str, str]:
    """Dotted keys of a run's resolved config; {} (and a note) when absent or unreadable."""
    import yaml

    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        notes.append(f"{path.name} unreadable: {str(e).splitlines()[0]}")
        return {}
    if not isinstance(data, dict):
        notes.append(f"{path.name} is not a mapping")
        return {}
    return {
        k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in flatten(data).items()
    }


def config_diff(runs: list[Run], ignore: tuple[str, ...] = ("run.dir",)) -> list[str]:
    """The dotted keys whose values differ between runs that have a config (a key missing
    from some counts as different); ``run.dir`` always differs and is left out."""
    configs = [r.config for r in runs if r.config]
    if len(configs) < 2:
        return []
    keys = sorted({k for c in configs for k in c} - set(ignore))
    return [k for k in keys if len({c.get(k) for c in configs}) > 1]


def _sample_row(row) -> dict | None:
    if not isinstance(row, dict):
        return None
    step = as_float(row.get("step"))
    if step is None or not math.isfinite(step) or not isinstance(row.get("completion"), str):
        return None
    return {k: row.get(k) for k in SAMPLE_FIELDS} | {"step": step}


def read_samples(path: Path, notes: list[str], per_step: int = SAMPLES_PER_STEP) -> list[dict]:
    """Up to ``per_step`` rows of the first and of the last step in ``samples.jsonl``.

    Read line by line, so a long run's file is never held whole; malformed rows are
    skipped and counted in a note.
    """
    if not path.is_file():
        return []
    first: list[dict] = []
    last: list[dict] = []
    bad = 0
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = _sample_row(parse_json(line))
                except json.JSONDecodeError:
                    row = None
                if row is None:
                    bad += 1
                elif not first or row["step"] == first[0]["step"]:
                    first = (first + [row])[:per_step]
                elif last and row["step"] == last[0]["step"]:
                    last = (last + [row])[:per_step]
                else:  # a new step: the latest one so far
                    last = [row]
    except OSError as e:
        notes.append(f"{path.name} unreadable: {e.strerror}")
    if bad:
        notes.append(f"{path.name}: {bad} malformed rows skipped")
    return first + last


def alert_kind(text: str) -> str:
    """The alert's words before its first number: one name for every firing of a rule."""
    return re.split(r"[-+]?\d", text, maxsplit=1)[0].strip(" :,(") or text[:40]


def alerts_of(run: Run) -> list[tuple[float, str]]:
    """(step, alert text) of every alert the run's records hold."""
    out = []
    for r in run.records:
        alerts = r.get("alerts")
        if isinstance(alerts, list):
            out.extend((r["step"], str(a)) for a in alerts)
    return out
