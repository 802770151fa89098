"""Held-out evaluation of a policy on a list of examples.

Metrics (keys without the ``eval/`` prefix):
- ``acc``: greedy accuracy (temperature 0), with ``len_mean`` (completion tokens, EOS
  included), ``truncated_frac`` (no EOS within ``max_new_tokens``), verifier ``timeouts``, ``n``.
- With ``k > 0``, k samples per problem at ``temperature`` / ``top_p``:
  ``avg@k``, the mean accuracy over every sample (DAPO's avg@32, section 4.1);
  ``pass@k``, the unbiased estimator of Chen et al. 2021 (arXiv 2107.03374),
  1 - C(n - c, k) / C(n, k) for n samples of which c are correct, averaged over problems;
  ``maj@k``, majority voting (self-consistency, Wang et al. 2022, arXiv 2203.11171);
  ``len_mean@k`` and ``truncated_frac@k`` of the samples.

maj@k: each sample's final answer is read with the verifier's own extraction
(``rewards.extract_answer``); samples with no answer do not vote; the most common answer
wins, a tie goes to the answer seen first. The winning answer is scored through the first
sample that gave it: the verifier has already judged exactly that answer against the
reference, so no extra call is made. A problem where no sample answered counts as wrong.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch

from dapo_rl.data.templates import build_prompt
from dapo_rl.rewards import extract_answer, get_verifier, references, score_all
from dapo_rl.rollout import concat_rollouts
from dapo_rl.samples import SAMPLES_PER_EVAL, sample_records


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c correct) is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_index(answers: Sequence[str | None]) -> int | None:
    """Index of the first sample giving the most common answer; None if none answered.

    >>> majority_index(["5", "4", None, "4", "5"])  # 5 and 4 tie at two votes: 5 came first
    0
    """
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None
    winner = max(votes, key=votes.__getitem__)  # max keeps the first of equal counts
    return answers.index(winner)


def maj_at_k(answers: Sequence[Sequence[str | None]], acc: torch.Tensor) -> float:
    """Share of problems whose majority answer is correct. acc (P, k) is each sample's verdict."""
    hits = 0
    for votes, correct in zip(answers, acc.tolist(), strict=True):
        i = majority_index(votes)
        hits += i is not None and bool(correct[i])
    return hits / len(answers)


def _generate(engine, prompts: list[str], n: int, progress, **sampling):
    """``engine.generate``; with ``progress`` in the engine's own batches, reporting each.

    The batches are those ``HFEngine.generate`` makes (``batch_size // n`` prompts), drawing
    from the generator in the same order, so reporting progress changes no sample."""
    if progress is None:
        return engine.generate(prompts, n=n, **sampling)
    per = max(1, (sampling.get("batch_size") or getattr(engine, "batch_size", 64)) // n)
    parts = []
    for start in range(0, len(prompts), per):
        parts.append(engine.generate(prompts[start : start + per], n=n, **sampling))
        progress(min(start + per, len(prompts)) * n)
    return concat_rollouts(parts, getattr(engine, "pad_id", 0))


def _run(
    engine, tokenizer, examples, verifier: str, *, template, n, timeout, progress=None, **sampling
):
    """Generate n completions per example and score them: (acc (P, n), rollout, texts, faults)."""
    prompts = [build_prompt(tokenizer, ex, template) for ex in examples]
    ro = _generate(engine, prompts, n, progress, **sampling)
    texts = tokenizer.batch_decode(
        [ids[m.bool()] for ids, m in zip(ro.completion_ids, ro.mask, strict=True)],
        skip_special_tokens=True,
    )
    verdicts, faults = score_all(
        get_verifier(verifier),
        texts,
        references(examples, n),
        timeout=timeout,
    )
    acc = torch.tensor([v.acc for v in verdicts], dtype=torch.float32).view(len(examples), n)
    return acc, ro, texts, faults, verdicts


def _sampled(acc: torch.Tensor, ro, texts: list[str], verifier: str, k: int) -> dict:
    """The k-sample metrics from verdicts acc (P, k) and the decoded samples (P * k)."""
    answers = [extract_answer(t, verifier) for t in texts]
    by_problem = [answers[i : i + k] for i in range(0, len(answers), k)]
    correct = acc.sum(1).long().tolist()
    return {
        f"avg@{k}": float(acc.mean()),
        f"pass@{k}": sum(pass_at_k(k, c, k) for c in correct) / len(correct),
        f"maj@{k}": maj_at_k(by_problem, acc),
        f"len_mean@{k}": float(ro.lengths.float().mean()),
        f"truncated_frac@{k}": float(ro.truncated.float().mean()),
        # problems whose k samples are all right or all wrong: zero-variance GRPO groups
        f"zero_var@{k}": sum(c in (0, k) for c in correct) / len(correct),
    }


def evaluate(
    engine,
    tokenizer,
    examples,
    verifier: str,
    *,
    template: str,
    max_new_tokens: int,
    k: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator=None,
    timeout: float = 2.0,
    batch_size: int | None = None,
    progress=None,
    samples: list | None = None,
) -> dict:
    """Metrics of ``engine``'s policy on ``examples`` (keys without the ``eval/`` prefix).

    ``verifier`` is a spec for ``rewards.get_verifier`` (it also names the answer extraction
    used for maj@k). ``engine.generate`` returns a ``rollout.Rollout`` with n completions per
    prompt in contiguous rows; ``tokenizer.batch_decode`` turns completions into text.
    ``progress(done, total)``, if given, hears of the completions generated so far;
    ``samples``, if given, receives ``SAMPLES_PER_EVAL`` greedy completions as records.
    """
    total = len(examples) * (1 + k)
    report = None if progress is None else (lambda done: progress(done, total))
    common = {"template": template, "timeout": timeout, "batch_size": batch_size}
    acc, ro, texts, faults, verdicts = _run(
        engine,
        tokenizer,
        examples,
        verifier,
        n=1,
        max_new_tokens=max_new_tokens,
        temperature=0.0,
        progress=report,
        **common,
    )
    if samples is not None:
        samples += sample_records(examples, texts, verdicts, ro, SAMPLES_PER_EVAL)
    out = {
        "acc": float(acc.mean()),
        "len_mean": float(ro.lengths.float().mean()),
        "truncated_frac": float(ro.truncated.float().mean()),
    }
    timeouts = faults.get("timeout", 0)
    if k > 0:
        greedy = len(examples)
        report_k = None if progress is None else (lambda done: progress(greedy + done, total))
        acc_k, ro_k, texts, faults_k, _ = _run(
            engine,
            tokenizer,
            examples,
            verifier,
            n=k,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            generator=generator,
            progress=report_k,
            **common,
        )
        out.update(_sampled(acc_k, ro_k, texts, verifier, k))
        timeouts += faults_k.get("timeout", 0)
    return {**out, "timeouts": timeouts, "n": len(examples)}
