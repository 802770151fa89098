"""Metric sinks and the step record.

Owns where step metrics go: ``metrics.jsonl`` in the run directory (one JSON object per
step, flushed at once so a killed run keeps every finished step), the console (a tqdm
progress bar with ETA and the key numbers), and the optional TensorBoard and Weights &
Biases sinks, whose packages are imported only when chosen. Metric names are namespaced
(``reward/``, ``acc/``, ``len/``, ``clip/``, ``ds/``, ``time/``, ``throughput/``, ``eval/``).

Also owns the record format: JSON has no NaN/inf, so non-finite floats are written as the
strings "nan"/"inf"/"-inf"; ``as_float`` reads any record value back as a float.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from dapo_rl.errors import DapoError


def memory_metrics() -> dict[str, float]:
    """This process's memory after a step, in MiB: resident now and at its peak, and (with
    CUDA) the peak of allocated GPU memory since the last call, which resets it.

    ``mem/rss`` is read from /proc (Linux); the peak comes from getrusage.
    """
    import resource
    import sys

    import torch

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"mem/peak_rss": peak_kib / (1024 * 1024 if sys.platform == "darwin" else 1024)}
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        out["mem/rss"] = pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["mem/cuda_peak"] = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    return out


SINKS = ("jsonl", "tensorboard", "wandb")
WANDB_MODES = ("online", "offline", "disabled")

_CONSOLE_KEYS = {
    "reward/mean": "R",
    "acc/mean": "acc",
    "entropy/mean": "H",
    "len/mean": "len",
    "ds/zero_var_frac": "zv",
    "eval/acc": "eval",
    "time/step": "s",
}
# one line on the console at the start of a run: what the bar's short labels stand for
LEGEND = (
    "bar: R mean reward (shaped) | acc training accuracy | H entropy per token (nats) | "
    "len mean completion tokens | zv share of groups all right or all wrong | "
    "eval held-out accuracy | s seconds per step"
)


def as_float(value) -> float | None:
    """A record value as a float (the strings "nan"/"inf" included); None if not numeric."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "+inf"):
        return float(value)
    return None


def numeric_items(record: dict) -> dict[str, float]:
    """Every numeric metric of a record (non-finite included), without ``step``."""
    out = {}
    for key, value in record.items():
        x = as_float(value)
        if key != "step" and x is not None:
            out[key] = x
    return out


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

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, notes: bool = True):
        from tqdm import tqdm

        self.notes = notes
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

    def eval_progress(self, name: str | None, done: int, total: int) -> None:
        """Show an evaluation's progress in the bar's label; ``name`` None ends it."""
        label = "train" if name is None else f"{name} {done}/{total}"
        self.bar.set_description_str(label, refresh=True)

    def note(self, text: str) -> None:
        if self.notes:  # off on all ranks but 0 of a torchrun world
            self.bar.write(text)

    def close(self) -> None:
        self.bar.close()


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise DapoError(
            "metrics sink 'tensorboard' needs the tensorboard package: pip install tensorboard"
        ) from e
    return SummaryWriter


def _wandb():
    try:
        import wandb
    except ImportError as e:
        raise DapoError("metrics sink 'wandb' needs the wandb package: pip install wandb") from e
    return wandb


def check_sinks(names: list[str] | tuple[str, ...]) -> None:
    """Import the packages of the sinks in ``names`` now, so a missing one fails before the
    run directory is written; DapoError naming the package."""
    for name in names:
        if name == "tensorboard":
            _summary_writer()
        elif name == "wandb":
            _wandb()


class TensorBoardSink:
    """Every numeric metric as a TensorBoard scalar at ``record["step"]``."""

    def __init__(self, log_dir: str | Path):
        self.writer = _summary_writer()(log_dir=str(log_dir))

    def write(self, record: dict) -> None:
        step = int(record["step"])
        for key, value in numeric_items(record).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a step takes seconds; a killed run keeps what it logged

    def write_samples(self, kind: str, records: list[dict], step: int) -> None:
        """Sample completions as markdown text (TensorBoard's text tab)."""
        from dapo_rl.samples import markdown

        self.writer.add_text(f"samples/{kind}", markdown(records), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """Every numeric metric logged to a Weights & Biases run at ``record["step"]``.

    ``mode="offline"`` writes under ``<run_dir>/wandb`` without network (``wandb sync``
    uploads it later); ``"disabled"`` makes every call a no-op.
    """

    def __init__(
        self, project: str, run_dir: str | Path, mode: str = "offline", config: dict | None = None
    ):
        if mode not in WANDB_MODES:
            raise DapoError(f"wandb mode {mode!r} is not one of {', '.join(WANDB_MODES)}")
        wandb = _wandb()
        run_dir = Path(run_dir)
        self.run = wandb.init(
            project=project, dir=str(run_dir), name=run_dir.name, mode=mode, config=config
        )

    def write(self, record: dict) -> None:
        self.run.log(numeric_items(record), step=int(record["step"]))

    def write_samples(self, kind: str, records: list[dict], step: int) -> None:
        """Sample completions as a W&B table (one row per completion)."""
        columns = list(dict.fromkeys(k for r in records for k in r))
        rows = [[r.get(c) for c in columns] for r in records]
        table = _wandb().Table(columns=columns, data=rows)
        self.run.log({f"samples/{kind}": table}, step=step)

    def close(self) -> None:
        self.run.finish()


def make_sinks(
    names: list[str] | tuple[str, ...],
    run_dir: str | Path,
    *,
    wandb_project: str = "dapo-rl",
    wandb_mode: str = "offline",
    config: dict | None = None,
) -> list:
    """The sinks named in ``names`` (from ``SINKS``), writing under ``run_dir``.

    jsonl -> ``<run_dir>/metrics.jsonl``; tensorboard -> ``<run_dir>/tensorboard``;
    wandb -> a run named after ``run_dir`` with ``config`` attached. The console sink is
    not listed: it needs the step count and is built by the loop.
    """
    unknown = [n for n in names if n not in SINKS]
    if unknown:
        raise DapoError(f"unknown metrics sink {unknown[0]!r}; choose from {', '.join(SINKS)}")
    if len(set(names)) != len(names):
        raise DapoError(f"metrics sinks listed twice: {list(names)}")
    run_dir = Path(run_dir)
    sinks: list = []
    try:
        for name in names:
            match name:
                case "jsonl":
                    sinks.append(JsonlSink(run_dir / "metrics.jsonl"))
                case "tensorboard":
                    sinks.append(TensorBoardSink(run_dir / "tensorboard"))
                case "wandb":
                    sinks.append(WandbSink(wandb_project, run_dir, wandb_mode, config))
    except DapoError:
        for sink in sinks:  # a missing package for one sink leaves no other open
            sink.close()
        raise
    return sinks


MAX_METRICS_BYTES = 1 << 30  # a metrics file is ~2 kB a step: half a million steps


def parse_json(text: str):
    """``json.loads`` where an integer too long for a float's range becomes a float (inf),
    instead of an exception no caller expects (Python refuses ints of > 4300 digits, and
    float() of a 400-digit int overflows)."""
    return json.loads(text, parse_int=lambda s: int(s) if len(s) <= 18 else float(s))


def _record(line: str, where: str) -> dict:
    """One metrics line as a record with a numeric step, else DapoError naming the line."""
    try:
        record = parse_json(line)
    except json.JSONDecodeError as e:
        raise DapoError(f"{where}: not JSON ({e.msg}, column {e.colno})") from None
    except RecursionError:
        raise DapoError(f"{where}: JSON nested too deeply") from None
    if not isinstance(record, dict):
        raise DapoError(f"{where}: expected a JSON object, got {type(record).__name__}")
    step = record.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int | float) or not math.isfinite(step):
        raise DapoError(f"{where}: step must be a number, got {step!r:.40}")
    return record


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``<run_dir>/metrics.jsonl``; DapoError naming the file (and line) when
    it is not a regular UTF-8 file of JSON objects with numeric steps."""
    return read_records(Path(run_dir) / "metrics.jsonl")


def read_records(path: Path) -> list[dict]:
    """The records of a metrics file at ``path`` (``read_metrics``)."""
    if not path.is_file():  # a FIFO would block, a device never end
        raise DapoError(f"{path}: not a regular file")
    if path.stat().st_size > MAX_METRICS_BYTES:
        raise DapoError(f"{path}: larger than {MAX_METRICS_BYTES >> 30} GiB")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DapoError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise DapoError(f"cannot read {path}: {e.strerror}") from None
    return [_record(ln, f"{path}:{n}") for n, ln in enumerate(lines, start=1) if ln.strip()]
