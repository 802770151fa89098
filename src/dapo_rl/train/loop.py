"""The run: build every piece from a Config, evaluate, step, log, checkpoint, stop.

Everything that can fail on bad input (model name, data files, verifier, the metric sinks'
packages) is built or checked before the run directory is touched, so a bad run writes
nothing; ``rundir.prepare`` then locks the directory and writes the resolved config. A
failed write during the run (full disk, a directory made read-only) ends it with one line;
a half-written checkpoint is never resumed from. On resume, step records after the restored
checkpoint (and a line cut short by a kill) are removed from ``metrics.jsonl`` so the log
reads as one uninterrupted run.

Stopping:
- SIGINT / SIGTERM: the current step finishes, a checkpoint is written and ``Interrupted``
  is raised with one line saying how to resume; a second signal raises it at once.
- ``train.max_skipped_steps`` optimizer steps in a row skipped for a non-finite loss or
  gradient (``policy_update`` skips them) stop the run with a checkpoint of the weights,
  which skipped steps leave at their last good values, and a DapoError.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from dapo_rl import dist, models
from dapo_rl.alerts import check_alerts
from dapo_rl.config import Config, sinks, to_dict
from dapo_rl.data.arithmetic import Arithmetic
from dapo_rl.data.files import load_examples
from dapo_rl.data.stream import PromptStream
from dapo_rl.errors import DapoError
from dapo_rl.eval import evaluate_sets, load_eval_files
from dapo_rl.metrics import (
    LEGEND,
    ConsoleSink,
    check_sinks,
    make_sinks,
    memory_metrics,
    read_metrics,
)
from dapo_rl.rewards import check_columns, get_verifier
from dapo_rl.rollout import HFEngine, make_engine
from dapo_rl.samples import SamplesLog
from dapo_rl.train import checkpoint, rundir, schedule
from dapo_rl.train.picker import PickerSettings, PromptPicker
from dapo_rl.train.precision import Precision
from dapo_rl.train.signals import StopSignals
from dapo_rl.train.step import train_step
from dapo_rl.train.update import UpdateSettings


@dataclass
class TrainState:
    cfg: Config
    model: Any
    ref_model: Any
    tokenizer: Any
    engine: HFEngine
    optimizer: torch.optim.Optimizer
    scheduler: Any
    stream: PromptStream
    eval_set: list
    eval_files: tuple  # eval.path files (eval.EvalFile), logged under eval/<name>/
    verifier: Any
    generator: torch.Generator
    update_settings: UpdateSettings
    picker: PromptPicker  # pass rate, carried groups, prompt history, predictive skip
    precision: Precision  # model (fp32 master) and the working copy that computes
    step: int = 0
    skipped_in_a_row: int = 0  # optimizer steps skipped for non-finite gradients, in a row
    samples: list | None = None  # the step's sample completions; [] asks for them
    started: float = 0.0  # time.perf_counter() when this process began the run


def data_fields(cfg: Config) -> dict:
    """The ``data.*`` layout keys, for training and held-out files alike."""
    d = cfg.data
    return dict(
        format=d.format,
        prompt_field=d.prompt_field,
        answer_field=d.answer_field,
        prompt_template=d.prompt_template,
    )


def _datasets(cfg: Config):
    d = cfg.data
    if d.task == "arithmetic":
        task = Arithmetic(d.min_value, d.max_value, d.num_terms, d.ops)
        eval_set = task.held_out(0, cfg.eval.size)
        train_source = task
    else:
        train_source = load_examples(d.path, **data_fields(cfg))
        eval_set = None
    eval_files = load_eval_files(cfg.eval.path, limit=cfg.eval.size, **data_fields(cfg))
    if eval_set is None and eval_files:
        eval_set = eval_files[0].examples  # a file task: its first held-out file
    if eval_set is None:
        eval_set = train_source[: cfg.eval.size]  # a file run without eval.path: training fit
        warnings.warn("no eval.path: evaluating on the first training examples", stacklevel=2)
    exclude = {ex.problem for ex in eval_set} if d.task == "arithmetic" else set()
    return PromptStream(train_source, seed=cfg.run.seed, exclude=exclude), eval_set, eval_files


def build_state(cfg: Config) -> TrainState:
    """Every component of a run; raises DapoError on bad input, touching no files."""
    check_sinks(sinks(cfg))  # tensorboard / wandb importable, before anything is written
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(cfg.run.seed)
    stream, eval_set, eval_files = _datasets(cfg)
    verifier = get_verifier(cfg.rewards.fn)
    train_rows = stream.source if isinstance(stream.source, list) else eval_set
    check_columns(verifier, train_rows, cfg.data.path or "the arithmetic task")
    for f in eval_files:
        check_columns(verifier, f.examples, f.path)
    tokenizer = models.load_tokenizer(cfg.model.name)
    device = dist.init_from_env()  # joins the torchrun process group, if any
    # FSDP2: each model is sharded while empty and loaded into its shards (models.load_into)
    shard = None
    if cfg.train.fsdp:
        bf16, offload = cfg.model.dtype == "bfloat16", cfg.train.cpu_offload
        shard = functools.partial(dist.shard_model, bf16=bf16, cpu_offload=offload)
    model, ref_model = models.load_policy(cfg, device, shard=shard)  # LoRA: ref is the base
    t = cfg.train
    # fused AdamW: one pass over each weight, its gradient and both moments instead of a
    # dozen elementwise passes (3x faster on the CPU; benchmarks/bf16_speed.py); FSDP2's
    # DTensor shards keep the default implementation
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=not t.fsdp
    )
    scheduler = schedule.make_scheduler(optimizer, cfg)
    precision = Precision.for_run(cfg, model)  # bf16: a working copy, refreshed per step
    precision.attach(optimizer)
    ref_model = precision.reference(ref_model)
    settings = UpdateSettings.from_config(cfg)
    engine = make_engine(cfg, precision.working, tokenizer, autocast_dtype=settings.autocast_dtype)
    return TrainState(
        cfg,
        model,
        ref_model,
        tokenizer,
        engine,
        optimizer,
        scheduler,
        stream,
        eval_set,
        eval_files,
        verifier,
        torch.Generator().manual_seed(cfg.run.seed),
        settings,
        PromptPicker(PickerSettings.from_config(cfg), seed=cfg.run.seed),
        precision,
    )


def _step_of(line: str) -> int | None:
    """The step of a metrics line; None for a line cut short by a kill."""
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError, TypeError):
        return None


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the records of steps up to ``last_step`` (none when it is negative)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = [ln for ln in lines if (s := _step_of(ln)) is not None and s <= last_step]
    rundir.write_atomic(path, "".join(ln + "\n" for ln in kept))


def run_eval(state: TrainState, *, progress=None, samples=None) -> dict[str, float]:
    cfg = state.cfg
    e = cfg.eval
    return evaluate_sets(
        state.engine,
        state.tokenizer,
        state.eval_set,
        state.eval_files,
        cfg.rewards.fn,
        seed=cfg.run.seed,
        progress=progress,
        samples=samples,
        template=cfg.data.template,
        max_new_tokens=e.max_new_tokens or cfg.rollout.max_new_tokens,
        k=e.k,
        temperature=e.temperature,
        top_p=e.top_p,
        timeout=cfg.rewards.timeout,
        batch_size=e.batch_size,
    )


def _due(step: int, every: int, last: int) -> bool:
    return step == last or bool(every and step % every == 0)


def _count_optimizer_steps(optimizer) -> list[int]:
    """A counter of the optimizer steps taken (a skipped step never calls ``step``)."""
    count = [0]

    def hook(*_):
        count[0] += 1

    optimizer.register_step_post_hook(hook)
    return count


def _track_skips(state: TrainState, record: dict, taken: int) -> str | None:
    """Update the run of skipped optimizer steps; a line to log when this step skipped any.

    The order of steps inside one training step is not reported, so a training step that
    both took and skipped steps counts its skipped ones as the latest (never too few).
    """
    skipped = int(record.get("grad/skipped_steps", 0))
    if not skipped:
        state.skipped_in_a_row = 0 if taken else state.skipped_in_a_row
        return None
    state.skipped_in_a_row = skipped if taken else state.skipped_in_a_row + skipped
    return (
        f"step {state.step}: {skipped} optimizer step(s) skipped for a non-finite loss or "
        f"gradient ({state.skipped_in_a_row} in a row)"
    )


def _evaluate(state: TrainState, console: ConsoleSink, log: SamplesLog) -> dict:
    """``run_eval`` with its progress on the console and its samples in the log."""
    samples: list = []
    try:
        metrics = run_eval(state, progress=console.eval_progress, samples=samples)
    finally:
        console.eval_progress(None, 0, 0)
    log.write(state.step, "eval", samples)
    return metrics


def _step_record(state: TrainState, history: list, console: ConsoleSink, log) -> dict:
    """One training step (with its evaluation when due) as a metrics record."""
    cfg, step = state.cfg, state.step
    state.samples = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = {"step": step, **train_step(state), **memory_metrics()}
    schedule.seek(state.scheduler, step * cfg.train.mini_batches_per_step)  # on plan
    for w in caught:
        console.note(f"warning: {w.message}")
    log.write(step, "train", state.samples or [])
    if _due(step, cfg.eval.every, cfg.train.steps):
        record.update(_evaluate(state, console, log))
    alerts = check_alerts(history, record, thresholds=cfg.alerts, only_new=True)
    if alerts:
        record["alerts"] = alerts
    for text in alerts:
        console.note(f"alert (step {step}): {text}")
    return record


def _diverged(state: TrainState, ckpt: Path) -> DapoError:
    n, limit = state.skipped_in_a_row, state.cfg.train.max_skipped_steps
    return DapoError(
        f"training stopped at step {state.step}: {n} optimizer steps in a row were skipped "
        f"for a non-finite loss or gradient (train.max_skipped_steps={limit}); the last good "
        f"weights are in {ckpt}; try a lower train.lr"
    )


def _run(state: TrainState, run_dir: Path, start: int, history: list, sinks_, console, stop):
    """Evaluate at step 0 (fresh runs), then step, log and checkpoint until done or stopped.

    Every record carries ``time/run``: seconds since this process began the run (model
    loading included), so the wall time to a held-out accuracy is read off the metrics.
    """
    cfg = state.cfg
    log = SamplesLog(run_dir, sinks_) if dist.is_main() else _NoSamples()
    if start == 0:
        record = {"step": 0, **_evaluate(state, console, log)}
        record["time/run"] = time.perf_counter() - state.started
        for sink in sinks_:
            sink.write(record)
        history.append(record)
        console.note(f"step 0: held-out acc {record['eval/acc']:.3f}")
    taken = _count_optimizer_steps(state.optimizer)
    limit = cfg.train.max_skipped_steps
    for step in range(start + 1, cfg.train.steps + 1):
        if stop.agreed():
            raise stop.stopped(f"before step {step}", None)
        state.step, before = step, taken[0]
        record = _step_record(state, history, console, log)
        record["time/run"] = time.perf_counter() - state.started
        note = _track_skips(state, record, taken[0] - before)
        if note:
            console.note(f"warning: {note}")
        for sink in (*sinks_, console):
            sink.write(record)
        history.append(record)
        ckpt = None
        if _due(step, cfg.run.checkpoint_every, cfg.train.steps):
            ckpt = checkpoint.save(run_dir, state, keep=cfg.run.keep_checkpoints)
        diverged = bool(limit) and state.skipped_in_a_row >= limit
        if stop.agreed() or diverged:
            ckpt = ckpt or checkpoint.save(run_dir, state, keep=cfg.run.keep_checkpoints)
            raise _diverged(state, ckpt) if diverged else stop.stopped(f"after step {step}", ckpt)


class _NoSamples:
    """Ranks other than 0 write no samples."""

    def write(self, *args) -> None:
        pass


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def train(cfg: Config) -> Path:
    """Run (or resume) training as configured; returns the run directory.

    Raises ``Interrupted`` when stopped by SIGINT/SIGTERM (after writing a checkpoint) and
    DapoError on bad input or after ``train.max_skipped_steps`` skipped optimizer steps.
    """
    started = time.perf_counter()
    state = build_state(cfg)
    state.started = started
    if dist.is_main():  # rank 0 writes
        run_dir, lock = rundir.prepare(cfg)
    else:
        run_dir, lock = Path(cfg.run.dir), None
    try:
        return _train(state, run_dir)
    except OSError as e:  # a full disk, a directory made read-only mid-run
        where = e.filename or run_dir
        raise DapoError(f"run stopped: {where}: {e.strerror or e}") from None
    finally:
        if lock is not None:
            os.close(lock)  # releases the run directory


def _train(state: TrainState, run_dir: Path) -> Path:
    cfg = state.cfg
    metrics_path = run_dir / "metrics.jsonl"
    start = checkpoint.load_latest(run_dir, state, log=_warn) if cfg.resume else 0
    if start:
        state.precision.refresh()  # the working copy follows the restored master weights
    state.engine.sync_weights(state.model)  # a separate sampler starts from these weights
    samples_path = run_dir / "samples.jsonl"
    if cfg.resume and dist.is_main():
        for path in (metrics_path, samples_path):  # no checkpoint: start over
            _truncate_metrics(path, start if start else -1)
    elif dist.is_main():
        metrics_path.unlink(missing_ok=True)
        samples_path.unlink(missing_ok=True)
    history = read_metrics(run_dir) if metrics_path.exists() else []
    sinks_ = make_sinks(
        sinks(cfg) if dist.is_main() else [],
        run_dir,
        wandb_project=cfg.log.wandb_project,
        wandb_mode=cfg.log.wandb_mode,
        config=to_dict(cfg),
    )
    progress = cfg.run.progress and dist.is_main()
    console = ConsoleSink(cfg.train.steps, initial=start, enabled=progress, notes=dist.is_main())
    console.note("config:\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip())
    console.note(LEGEND)
    try:
        with StopSignals(run_dir) as stop:
            _run(state, run_dir, start, history, sinks_, console, stop)
    finally:
        for sink in (*sinks_, console):
            sink.close()
    return run_dir
