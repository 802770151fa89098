"""The run: build every piece from a Config, evaluate, step, log, checkpoint, stop.

Everything that can fail on bad input (model name, data files, verifier) is built before
the run directory is touched, so a bad run writes nothing. The resolved config is written
(atomically) to ``<run.dir>/config.yaml``; an existing different run is refused unless
``resume=true`` or ``run.overwrite=true``. On resume, step records after the restored
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

import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from dapo_rl import dist, models
from dapo_rl.alerts import check_alerts
from dapo_rl.config import Config, flatten, sinks, to_dict
from dapo_rl.data.arithmetic import Arithmetic
from dapo_rl.data.files import load_examples
from dapo_rl.data.stream import PromptStream
from dapo_rl.errors import DapoError
from dapo_rl.eval import evaluate_sets, load_eval_files
from dapo_rl.metrics import ConsoleSink, make_sinks, memory_metrics, read_metrics
from dapo_rl.rewards import get_verifier
from dapo_rl.rollout import HFEngine, make_engine
from dapo_rl.train import checkpoint
from dapo_rl.train.precision import Precision
from dapo_rl.train.sampler import Sampler, SamplerSettings
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
    sampler: Sampler  # pass rate, carried groups, prompt history, predictive skip
    precision: Precision  # model (fp32 master) and the working copy that computes
    step: int = 0
    skipped_in_a_row: int = 0  # optimizer steps skipped for non-finite gradients, in a row


def _datasets(cfg: Config):
    d = cfg.data
    if d.task == "arithmetic":
        task = Arithmetic(d.min_value, d.max_value, d.num_terms, d.ops)
        eval_set = task.held_out(0, cfg.eval.size)
        train_source = task
    else:
        train_source = load_examples(
            d.path, format=d.format, prompt_field=d.prompt_field, answer_field=d.answer_field
        )
        eval_set = None
    eval_files = load_eval_files(cfg.eval.path, limit=cfg.eval.size)
    if eval_set is None and eval_files:
        eval_set = eval_files[0].examples  # a file task: its first held-out file
    if eval_set is None:
        eval_set = train_source[: cfg.eval.size]  # a file run without eval.path: training fit
        warnings.warn("no eval.path: evaluating on the first training examples", stacklevel=2)
    exclude = {ex.problem for ex in eval_set} if d.task == "arithmetic" else set()
    return PromptStream(train_source, seed=cfg.run.seed, exclude=exclude), eval_set, eval_files


def build_state(cfg: Config) -> TrainState:
    """Every component of a run; raises DapoError on bad input, touching no files."""
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(cfg.run.seed)
    stream, eval_set, eval_files = _datasets(cfg)
    verifier = get_verifier(cfg.rewards.fn)
    tokenizer = models.load_tokenizer(cfg.model.name)
    device = dist.init_from_env()  # joins the torchrun process group, if any
    model, ref_model = models.load_policy(cfg, device)  # LoRA: the reference is the base
    if cfg.train.fsdp:
        dist.shard_layers(model)  # FSDP2, before the optimizer sees the parameters
    t = cfg.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    warm = t.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / (warm + 1))
    )
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
        Sampler(SamplerSettings.from_config(cfg), seed=cfg.run.seed),
        precision,
    )


def _check_resumable(saved: Path, cfg: Config) -> None:
    """Refuse to resume a run whose saved config differs in a key a resume may not change."""
    try:
        tree = yaml.safe_load(saved.read_text())
        old = flatten(tree)
    except (OSError, yaml.YAMLError, AttributeError):
        raise DapoError(
            f"cannot read the saved config {saved}; pass run.overwrite=true to start over"
        ) from None
    defaults = flatten(to_dict(Config()))  # keys added since the run was saved: defaults
    new = flatten(to_dict(cfg))
    changed = [
        k
        for k in new
        if old.get(k, defaults.get(k)) != new[k] and k not in checkpoint.RESUMABLE_KEYS
    ]
    if changed:
        raise DapoError(
            f"resume=true but the config differs from the saved run in {', '.join(changed)}"
        )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prepare_dir(cfg: Config) -> Path:
    run_dir = Path(cfg.run.dir)
    saved = run_dir / "config.yaml"
    if saved.exists() and cfg.resume:
        _check_resumable(saved, cfg)
    elif saved.exists() and not cfg.run.overwrite:
        raise DapoError(
            f"run directory {run_dir} already holds a run: pass resume=true to continue "
            "it or run.overwrite=true to replace it"
        )
    elif cfg.run.overwrite:
        for name in ("metrics.jsonl", "checkpoints", "config.yaml"):
            path = run_dir / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(
                missing_ok=True
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(saved, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return run_dir


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
    _write_atomic(path, "".join(ln + "\n" for ln in kept))


def run_eval(state: TrainState) -> dict[str, float]:
    cfg = state.cfg
    e = cfg.eval
    return evaluate_sets(
        state.engine,
        state.tokenizer,
        state.eval_set,
        state.eval_files,
        cfg.rewards.fn,
        seed=cfg.run.seed,
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


def _step_record(state: TrainState, history: list, console: ConsoleSink) -> dict:
    """One training step (with its evaluation when due) as a metrics record."""
    cfg, step = state.cfg, state.step
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = {"step": step, **train_step(state), **memory_metrics()}
    for w in caught:
        console.note(f"warning: {w.message}")
    if _due(step, cfg.eval.every, cfg.train.steps):
        record.update(run_eval(state))
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
    """Evaluate at step 0 (fresh runs), then step, log and checkpoint until done or stopped."""
    cfg = state.cfg
    if start == 0:
        record = {"step": 0, **run_eval(state)}
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
        record = _step_record(state, history, console)
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


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def train(cfg: Config) -> Path:
    """Run (or resume) training as configured; returns the run directory.

    Raises ``Interrupted`` when stopped by SIGINT/SIGTERM (after writing a checkpoint) and
    DapoError on bad input or after ``train.max_skipped_steps`` skipped optimizer steps.
    """
    state = build_state(cfg)
    run_dir = _prepare_dir(cfg) if dist.is_main() else Path(cfg.run.dir)  # rank 0 writes
    metrics_path = run_dir / "metrics.jsonl"
    start = checkpoint.load_latest(run_dir, state, log=_warn) if cfg.resume else 0
    if start:
        state.precision.refresh()  # the working copy follows the restored master weights
    state.engine.sync_weights(state.model)  # a separate sampler starts from these weights
    if cfg.resume and dist.is_main():
        _truncate_metrics(metrics_path, start if start else -1)  # no checkpoint: start over
    elif dist.is_main():
        metrics_path.unlink(missing_ok=True)
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
    console.note("config: " + json.dumps(to_dict(cfg)))
    try:
        with StopSignals(run_dir) as stop:
            _run(state, run_dir, start, history, sinks_, console, stop)
    finally:
        for sink in (*sinks_, console):
            sink.close()
    return run_dir
