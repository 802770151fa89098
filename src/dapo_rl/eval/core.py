"""Held-out evaluation of a policy on a list of examples.

Greedy accuracy always; with ``k > 0`` also avg@k (mean accuracy over k samples per
problem) and pass@k with the unbiased estimator of Chen et al. 2021 (arXiv 2107.03374):
pass@k = 1 - C(n - c, k) / C(n, k) for n samples of which c are correct.
"""

from __future__ import annotations

import math

import torch

from dapo_rl.data.templates import build_prompt
from dapo_rl.rewards import score_all


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c correct) is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _run(engine, tokenizer, examples, verifier, *, template, n, timeout, **sampling):
    prompts = [build_prompt(tokenizer, ex.problem, template) for ex in examples]
    ro = engine.generate(prompts, n=n, **sampling)
    texts = tokenizer.batch_decode(
        [ids[m.bool()] for ids, m in zip(ro.completion_ids, ro.mask, strict=True)],
        skip_special_tokens=True,
    )
    verdicts, faults = score_all(
        verifier, texts, [ex.answer for ex in examples for _ in range(n)], timeout=timeout
    )
    acc = torch.tensor([v.acc for v in verdicts], dtype=torch.float32).view(len(examples), n)
    return acc, ro, texts, faults


def evaluate(
    engine,
    tokenizer,
    examples,
    verifier,
    *,
    template: str,
    max_new_tokens: int,
    k: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator=None,
    timeout: float = 2.0,
    batch_size: int | None = None,
) -> dict:
    """Metrics of ``engine``'s policy on ``examples`` (keys without the ``eval/`` prefix)."""
    acc, ro, _, faults = _run(
        engine,
        tokenizer,
        examples,
        verifier,
        template=template,
        n=1,
        timeout=timeout,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        temperature=0.0,
    )
    out = {
        "acc": float(acc.mean()),
        "len_mean": float(ro.lengths.float().mean()),
        "truncated_frac": float(ro.truncated.float().mean()),
        "timeouts": faults.get("timeout", 0),
        "n": len(examples),
    }
    if k > 0:
        acc_k, ro_k, _, _ = _run(
            engine,
            tokenizer,
            examples,
            verifier,
            template=template,
            n=k,
            timeout=timeout,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            generator=generator,
        )
        correct = acc_k.sum(1).long().tolist()
        out[f"avg@{k}"] = float(acc_k.mean())
        out[f"pass@{k}"] = sum(pass_at_k(k, c, k) for c in correct) / len(correct)
        out[f"len_mean@{k}"] = float(ro_k.lengths.float().mean())
    return out
