"""Held-out files: naming, loading and evaluating them, for ``dapo eval`` and the trainer.

Choices:
- A file's metric namespace is its stem, or its folder's name when the stem only names a
  split: ``gsm8k/test.jsonl`` -> ``gsm8k``, ``aime_small.jsonl`` -> ``aime_small``. A repeated
  name gets ``_2``, ``_3``.
- ``dapo eval`` scores a file with the verifier its layout's answers need
  (``DEFAULT_VERIFIERS``) unless told otherwise. In training every set is scored with
  ``rewards.fn``, the verifier the policy is trained against.
- In training (``evaluate_sets``) the task's own held-out set is logged under ``eval/`` and
  each ``eval.path`` file under ``eval/<name>/``. A file task has no held-out set of its own:
  its first ``eval.path`` file stands in, evaluated once and logged under both.
- Sampling for avg@k / pass@k / maj@k draws from its own generator seeded with ``seed``, never
  the trainer's: turning ``eval.k`` on leaves training unchanged, and every evaluation of a
  run draws the same noise, so steps compare with less variance.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from dapo_rl.data.files import Example, load_examples, source_format
from dapo_rl.data.templates import check_template, resolve
from dapo_rl.errors import DapoError
from dapo_rl.eval.core import evaluate
from dapo_rl.rewards import check_columns, get_verifier

DEFAULT_VERIFIERS = {  # layout (data.files.LAYOUTS) -> the verifier its answers need
    "gsm8k": "gsm8k",
    "asdiv": "gsm8k",
    "math500": "math",
    "aime": "math",
    "amc": "math",
    "dapo17k": "dapo_answer",
}
FALLBACK_VERIFIER = "math"
_SPLIT = re.compile(r"(test|train|validation|valid|val|dev|eval|data)([-_.].*)?", re.IGNORECASE)


@dataclass(frozen=True)
class EvalFile:
    """One held-out file, loaded."""

    name: str  # metric namespace: eval/<name>/...
    path: str
    format: str | None  # the detected layout
    examples: list[Example]


def eval_name(path: str | Path) -> str:
    """The metric namespace of a file: ``../data/gsm8k/test.jsonl`` -> ``gsm8k``."""
    p = Path(path)
    folder = p.resolve().parent.name
    name = folder if _SPLIT.fullmatch(p.stem) and folder else p.stem
    return re.sub(r"[^\w.-]", "_", name)


def default_verifier(format: str | None) -> str:
    """The verifier for a layout's answers (``math`` for a layout not listed)."""
    return DEFAULT_VERIFIERS.get(format, FALLBACK_VERIFIER)


def load_eval_file(
    path: str | Path, *, limit: int | None = None, name: str | None = None, **fields
):
    """``EvalFile`` for ``path``; DapoError (one line) for a missing or unreadable file.

    ``fields`` are ``load_examples``'s layout keywords (format, prompt_field, answer_field,
    prompt_template): the ``data.*`` keys, the same for training and evaluation files."""
    examples = load_examples(path, limit=limit, **fields)
    return EvalFile(name or eval_name(path), str(path), source_format(path), examples)


def load_eval_files(
    spec: str | None, *, limit: int | None = None, **fields
) -> tuple[EvalFile, ...]:
    """The files of a comma-separated ``eval.path``, each with a distinct name."""
    files, seen = [], Counter()
    for path in (p.strip() for p in (spec or "").split(",")):
        if not path:
            continue
        name = eval_name(path)
        seen[name] += 1
        files.append(load_eval_file(path, limit=limit, name=_numbered(name, seen[name]), **fields))
    return tuple(files)


def _numbered(name: str, count: int) -> str:
    return name if count == 1 else f"{name}_{count}"


def evaluate_sets(
    engine,
    tokenizer,
    main: list,
    files: tuple[EvalFile, ...],
    verifier: str,
    *,
    seed: int,
    progress=None,
    samples: list | None = None,
    **settings,
) -> dict:
    """``eval/<metric>`` on ``main``, ``eval/<name>/<metric>`` on each file.

    ``settings`` go to ``core.evaluate`` (template, max_new_tokens, k, temperature, ...).
    A list given twice (a file task's first file as ``main``) is evaluated once.
    ``progress(name, done, total)`` hears of each set's progress; ``samples`` collects a few
    greedy completions per set, each tagged with its ``set``.
    """
    done: dict[int, dict] = {}

    def metrics(examples: list, name: str) -> dict:
        if id(examples) not in done:
            generator = torch.Generator().manual_seed(seed)
            report = None if progress is None else (lambda d, t: progress(name, d, t))
            got: list | None = None if samples is None else []
            done[id(examples)] = evaluate(
                engine,
                tokenizer,
                examples,
                verifier,
                generator=generator,
                progress=report,
                samples=got,
                **settings,
            )
            if samples is not None:
                samples.extend({**r, "set": name} for r in got)
        return done[id(examples)]

    out = {f"eval/{key}": value for key, value in metrics(main, "eval").items()}
    for f in files:
        out.update(
            {f"eval/{f.name}/{key}": value for key, value in metrics(f.examples, f.name).items()}
        )
    return out


def load_policy(model: str, *, batch_size: int = 64):
    """(engine, tokenizer) for a model alias, directory or hub id, in eval mode."""
    from dapo_rl import models
    from dapo_rl.rollout import HFEngine

    tokenizer = models.load_tokenizer(model)
    policy = models.load_model(model).eval()
    return HFEngine(policy, tokenizer, batch_size=batch_size), tokenizer


def _check(k: int, temperature: float, top_p: float, max_new_tokens: int) -> None:
    if k < 0:
        raise DapoError(f"--k must be >= 0, got {k}")
    if temperature < 0:
        raise DapoError(f"--temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise DapoError(f"--top-p must be in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        raise DapoError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")


def run_file(
    path: str | Path,
    *,
    model: str,
    template: str,
    max_new_tokens: int,
    verifier: str | None = None,
    limit: int | None = None,
    k: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    timeout: float = 2.0,
    policy=None,
    fields: dict | None = None,
    progress=None,
) -> dict:
    """What ``dapo eval`` runs: the settings and ``core.evaluate``'s metrics, in one flat dict.

    Every input is checked before the model loads. ``policy`` is an (engine, tokenizer) pair
    already loaded (``load_policy``), so several files can share one model. ``fields`` are
    the ``data.*`` layout keys (format, prompt_field, answer_field, prompt_template);
    ``progress(done, total)`` hears of the completions generated.
    """
    _check(k, temperature, top_p, max_new_tokens)
    data = load_eval_file(path, limit=limit, **(fields or {}))
    verifier = verifier or default_verifier(data.format)
    check_columns(get_verifier(verifier), data.examples, str(path))
    check_template(template)  # an unknown template fails here, before the model loads
    engine, tokenizer = policy or load_policy(model, batch_size=batch_size)
    metrics = evaluate(
        engine,
        tokenizer,
        data.examples,
        verifier,
        template=template,
        max_new_tokens=max_new_tokens,
        k=k,
        temperature=temperature,
        top_p=top_p,
        generator=torch.Generator().manual_seed(seed),
        timeout=timeout,
        progress=progress,
    )
    settings = {"model": model, "data": str(path), "name": data.name, "format": data.format}
    shown = resolve(template, data.examples[0])  # auto: what the file's rows get
    settings.update(verifier=verifier, template=shown, max_new_tokens=max_new_tokens)
    settings.update(k=k, temperature=temperature, top_p=top_p, seed=seed)
    return {**settings, **metrics}
