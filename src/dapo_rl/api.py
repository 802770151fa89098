"""The Python API: what the ``dapo`` command does, callable from a notebook or a script.

    from dapo_rl import evaluate, make_config, run_training

    cfg = make_config({"model": {"name": "tiny-random"}}, "train.steps=2", run__dir="runs/a")
    result = run_training(cfg)        # RunResult: run_dir, config, metrics (one dict per step)
    result.metrics[-1]["eval/acc"]
    evaluate("runs/a/checkpoints/step_000002/model", "test.jsonl", "data.answer_field=gold")

A config is built as the command builds it: defaults <- preset <- file values <- overrides,
then ``config.validate``. ``make_config`` takes those layers as Python values: a dict (nested
or dotted keys), a YAML file path or a ``Config``, then ``KEY=VALUE`` strings or dicts, then
keyword arguments with ``__`` for the dot (``train__steps=2``). Bad input raises
``DapoError`` with the same one-line message the command prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dapo_rl import config as _config
from dapo_rl.config import Config
from dapo_rl.errors import DapoError

# `dapo eval` takes these sections' keys; what each one sets in ``heldout.run_file``
EVAL_SECTIONS = ("data", "rewards", "rollout")


def _values(layer: Any, where: str) -> dict[str, Any]:
    """One layer of config values as a flat {dotted key: value} dict."""
    if layer is None:
        return {}
    if isinstance(layer, Config):
        return _config.flatten(_config.to_dict(layer))
    if isinstance(layer, os.PathLike) or (
        isinstance(layer, str) and ("=" not in layer or layer.endswith((".yaml", ".yml")))
    ):
        return _config.load_yaml(layer)
    if isinstance(layer, str):
        return dict([_config.parse_override(layer)])
    if isinstance(layer, dict):
        return _config.flatten(layer)
    if isinstance(layer, list | tuple):
        out: dict[str, Any] = {}
        for item in layer:
            out.update(_values(item, where))
        return out
    raise DapoError(f"{where}: expected a dict, a YAML path, KEY=VALUE text or a Config")


def make_config(*layers: Any, preset: str | None = None, **keys: Any) -> Config:
    """A validated Config from ``layers`` (each a dict, YAML path, ``KEY=VALUE`` string, list
    of those, or Config; later ones win) and ``keys`` (``train__steps=2``), over ``preset``.
    """
    values: dict[str, Any] = {}
    for i, layer in enumerate(layers):
        values.update(_values(layer, f"make_config argument {i + 1}"))
    values.update({k.replace("__", "."): v for k, v in keys.items()})
    if preset is not None:
        values["preset"] = preset
    return _config.build(overrides=values)


@dataclass(frozen=True)
class RunResult:
    """What a training run left behind."""

    run_dir: Path  # config.yaml, metrics.jsonl, samples.jsonl, checkpoints/
    config: Config  # the resolved config the run used
    metrics: list[dict]  # one record per logged step (step 0: the first evaluation)

    @property
    def final(self) -> dict:
        """The last step's record."""
        return self.metrics[-1] if self.metrics else {}

    @property
    def samples(self) -> list[dict]:
        """The run's sample completions (``samples.jsonl``)."""
        from dapo_rl.samples import read_samples

        return read_samples(self.run_dir)

    @property
    def checkpoint(self) -> Path | None:
        """The newest checkpoint's model folder (loadable by ``evaluate``), if any."""
        from dapo_rl.train.checkpoint import checkpoint_dirs

        dirs = checkpoint_dirs(self.run_dir)
        return dirs[-1] / "model" if dirs else None


def run_training(cfg: Config | Any = None, *layers: Any, **keys: Any) -> RunResult:
    """Run (or resume) training; ``cfg`` is a Config or the first layer for ``make_config``.

    (Not called ``train``: ``dapo_rl.train`` is the training subpackage, and importing it
    would replace a function of that name on the package.)"""
    if not isinstance(cfg, Config) or layers or keys:
        cfg = make_config(*((cfg,) if cfg is not None else ()), *layers, **keys)
    from dapo_rl.metrics import read_metrics
    from dapo_rl.train.loop import train as _train

    run_dir = _train(cfg)
    return RunResult(Path(run_dir), cfg, read_metrics(run_dir))


def eval_settings(overrides: dict[str, Any]) -> dict[str, Any]:
    """``run_file`` keyword arguments from ``data.*``/``rewards.*``/``rollout.*`` keys given
    explicitly; other keys are refused. Values are checked as ``train`` checks them."""
    bad = [k for k in overrides if k.split(".")[0] not in EVAL_SECTIONS]
    if bad:
        raise DapoError(
            f"dapo eval takes data.*, rewards.* and rollout.* keys, not {', '.join(bad)}"
        )
    cfg = _config.build(overrides={**overrides, "algo.overlong_shaping": False})
    d, r, ro = cfg.data, cfg.rewards, cfg.rollout
    given = {
        "data.template": ("template", d.template),
        "rewards.fn": ("verifier", r.fn),
        "rewards.timeout": ("timeout", r.timeout),
        "rollout.max_new_tokens": ("max_new_tokens", ro.max_new_tokens),
        "rollout.temperature": ("temperature", ro.temperature),
        "rollout.top_p": ("top_p", ro.top_p),
        "rollout.batch_size": ("batch_size", ro.batch_size),
    }
    out = {arg: value for key, (arg, value) in given.items() if key in overrides}
    fields = {"format": d.format, "prompt_field": d.prompt_field}
    fields |= {"answer_field": d.answer_field, "prompt_template": d.prompt_template}
    out["fields"] = {k: v for k, v in fields.items() if v is not None}
    if d.path:
        out["path"] = d.path
    return out


def evaluate(
    model: str | os.PathLike,
    data: str | os.PathLike | None = None,
    *overrides: Any,
    k: int = 0,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = False,
    **settings: Any,
) -> dict:
    """Evaluate ``model`` (alias, folder or hub id) on ``data``: greedy accuracy and, with
    ``k``, avg@k / pass@k / maj@k. ``overrides`` are ``data.*``, ``rewards.*`` and
    ``rollout.*`` keys (strings or dicts) as in training, or a training Config (its keys of
    those sections); ``settings`` are ``run_file``'s
    own (template, verifier, max_new_tokens, temperature, top_p, batch_size, timeout).
    Returns the settings and metrics in one flat dict."""
    from dapo_rl.eval import run_file

    flat: dict[str, Any] = {}
    for layer in overrides:  # a Config lends its data.*, rewards.* and rollout.* keys
        values = _values(layer, "evaluate override")
        if isinstance(layer, Config):
            values = {k: v for k, v in values.items() if k.split(".")[0] in EVAL_SECTIONS}
        flat |= values
    chosen = eval_settings(flat)
    path = data if data is not None else chosen.pop("path", None)
    chosen.pop("path", None)
    if path is None:
        raise DapoError("evaluate: give a data file (or data.path=...)")
    e = _config.EvalConfig()
    args = {"template": "auto", "max_new_tokens": 512, "batch_size": 64}
    args |= {"temperature": e.temperature, "top_p": e.top_p, **chosen, **settings}
    bar = _EvalBar() if progress else None
    try:
        return run_file(path, model=str(model), limit=limit, k=k, seed=seed, progress=bar, **args)
    finally:
        if bar is not None:
            bar.close()


class _EvalBar:
    """A tqdm bar of completions generated, for ``dapo eval``."""

    def __init__(self):
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="eval", unit="completion", dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
