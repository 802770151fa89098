"""The run: build every piece from a Config, evaluate, step, log, checkpoint.

Everything that can fail on bad input (model name, data files, verifier) is built before
the run directory is touched, so a bad run writes nothing. The resolved config is written
to ``<run.dir>/config.yaml``; an existing different run is refused unless ``resume=true``
or ``run.overwrite=true``. On resume, step records after the restored checkpoint are cut
from ``metrics.jsonl`` so the log reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from dapo_rl import models
from dapo_rl.alerts import check_alerts
from dapo_rl.config import Config, sinks, to_dict
from dapo_rl.data.arithmetic import Arithmetic
from dapo_rl.data.files import load_examples
from dapo_rl.data.stream import PromptStream
from dapo_rl.errors import DapoError
from dapo_rl.eval import evaluate_sets, load_eval_files
from dapo_rl.metrics import ConsoleSink, make_sinks, read_metrics
from dapo_rl.rewards import get_verifier
from dapo_rl.rollout import HFEngine
from dapo_rl.train import checkpoint
from dapo_rl.train.step import train_step
from dapo_rl.train.update import UpdateSettings

_RESUMABLE_CHANGES = {
    "train.steps",
    "resume",
    "run.progress",
    "run.overwrite",
    "eval.every",
    "run.threads",
}


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
    step: int = 0
    pass_rate: float = 1.0  # share of groups kept by dynamic sampling in the last step


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
        eval_set = train_source[
            : cfg.eval.size
        ]  # a file run without eval.path: report training fit
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
    model = models.load_model(cfg.model.name, seed=cfg.run.seed)
    model.config.use_cache = False
    ref_model = None
    if cfg.algo.kl_coef > 0:
        ref_model = (
            models.load_model(cfg.model.name, seed=cfg.run.seed).eval().requires_grad_(False)
        )
    autocast = torch.bfloat16 if cfg.model.dtype == "bfloat16" else None
    t = cfg.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    warm = t.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / (warm + 1))
    )
    a = cfg.algo
    settings = UpdateSettings(
        eps_low=a.eps_low,
        eps_high=a.eps_high,
        dual_clip=a.dual_clip,
        loss_agg=a.loss_agg,
        norm_len=a.norm_len or cfg.rollout.max_new_tokens,
        kl_coef=a.kl_coef,
        kl_kind=a.kl_kind,
        temperature=cfg.rollout.temperature,
        mini_batches=t.mini_batches_per_step,
        micro_batch_size=t.micro_batch_size,
        max_grad_norm=t.max_grad_norm,
        group_size=cfg.rollout.group_size,
        share_prompt=t.share_prompt,
        autocast_dtype=autocast,
    )
    engine = HFEngine(model, tokenizer, batch_size=cfg.rollout.batch_size, autocast_dtype=autocast)
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
    )


def _prepare_dir(cfg: Config) -> Path:
    run_dir = Path(cfg.run.dir)
    saved = run_dir / "config.yaml"
    if saved.exists() and not cfg.run.overwrite:
        if not cfg.resume:
            raise DapoError(
                f"run directory {run_dir} already holds a run: pass resume=true to continue "
                "it or run.overwrite=true to replace it"
            )
        from dapo_rl.config import flatten

        old, new = flatten(yaml.safe_load(saved.read_text())), flatten(to_dict(cfg))
        changed = [k for k in new if old.get(k) != new[k] and k not in _RESUMABLE_CHANGES]
        if changed:
            raise DapoError(
                f"resume=true but the config differs from the saved run in {', '.join(changed)}"
            )
    elif cfg.run.overwrite:
        for name in ("metrics.jsonl", "checkpoints", "config.yaml"):
            shutil.rmtree(run_dir / name, ignore_errors=True) if (run_dir / name).is_dir() else (
                run_dir / name
            ).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return run_dir


def _truncate_metrics(path: Path, last_step: int) -> None:
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= last_step]
    path.write_text("".join(ln + "\n" for ln in kept))


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


def train(cfg: Config) -> Path:
    """Run (or resume) training as configured; returns the run directory."""
    state = build_state(cfg)
    run_dir = _prepare_dir(cfg)
    metrics_path = run_dir / "metrics.jsonl"
    start = checkpoint.load_latest(run_dir, state) if cfg.resume else 0
    if cfg.resume:
        _truncate_metrics(metrics_path, start)
    else:
        metrics_path.unlink(missing_ok=True)
    history = read_metrics(run_dir) if metrics_path.exists() else []
    sinks_ = make_sinks(
        sinks(cfg),
        run_dir,
        wandb_project=cfg.log.wandb_project,
        wandb_mode=cfg.log.wandb_mode,
        config=to_dict(cfg),
    )
    console = ConsoleSink(cfg.train.steps, initial=start, enabled=cfg.run.progress)
    console.note("config: " + json.dumps(to_dict(cfg)))
    try:
        if start == 0:
            record = {"step": 0, **run_eval(state)}
            for sink in sinks_:
                sink.write(record)
            history.append(record)
            console.note(f"step 0: held-out acc {record['eval/acc']:.3f}")
        for step in range(start + 1, cfg.train.steps + 1):
            state.step = step
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                record = {"step": step, **train_step(state)}
            for w in caught:
                console.note(f"warning: {w.message}")
            if _due(step, cfg.eval.every, cfg.train.steps):
                record.update(run_eval(state))
            alerts = check_alerts(history, record, thresholds=cfg.alerts, only_new=True)
            if alerts:
                record["alerts"] = alerts
            for text in alerts:
                console.note(f"alert (step {step}): {text}")
            for sink in (*sinks_, console):
                sink.write(record)
            history.append(record)
            if _due(step, cfg.run.checkpoint_every, cfg.train.steps):
                checkpoint.save(run_dir, state, keep=cfg.run.keep_checkpoints)
    finally:
        for sink in (*sinks_, console):
            sink.close()
    return run_dir
