"""Metric sinks and the step record.

Owns where step metrics go: ``metrics.jsonl`` in the run directory (always, one JSON
object per step, flushed at once so a killed run keeps every finished step) and the
console (a tqdm progress bar with ETA and the key numbers). Metric names are namespaced
(``reward/``, ``acc/``, ``len/``, ``clip/``, ``ds/``, ``time/``, ``throughput/``, ``eval/``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

_CONSOLE_KEYS = {
    "reward/mean": "R",
    "acc/mean": "acc",
    "entropy/mean": "H",
    "len/mean": "len",
    "ds/zero_var_frac": "zv",
    "eval/acc": "eval",
    "time/step": "s",
}


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep it visible
    return value


class JsonlSink:
    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")

    def close(self) -> None:
        pass


class ConsoleSink:
    """A progress bar with ETA; the postfix shows the key numbers of the last step."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True):
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            initial=initial,
            desc="train",
            unit="step",
            disable=not enabled,
            dynamic_ncols=True,
        )

    def write(self, record: dict) -> None:
        shown = {short: f"{record[k]:.3g}" for k, short in _CONSOLE_KEYS.items() if k in record}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)

    def note(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
