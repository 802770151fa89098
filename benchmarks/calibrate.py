"""Where does the base model land on an arithmetic task? (calibration of the built-in tasks)

    python benchmarks/calibrate.py [--problems 64] [--templates dapo_oneshot,dapo]
    python benchmarks/calibrate.py --num-terms 3 --ops +- --templates steps_oneshot \\
        --max-new-tokens 24,32,48 --out calibration_steps.json

For each prompt template and generation limit: greedy accuracy on held-out problems, and at
each sampling temperature (``--temperatures``, default 1.0) over G samples per problem the
mean accuracy, the share of zero-variance groups (all right or all wrong: what dynamic
sampling throws away), the length distribution, the truncation rate, the mean and 90th
percentile length of correct and of wrong completions, the accuracy of
truncated ones and the share of truncated ones that had already written the right number
(cut off on the way to a right answer). Groups need variance for GRPO to learn, so a task
should land at roughly 15-50% sampled accuracy; DAPO's length fixes need truncation to act
on. Prints a markdown table; saves the rows under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

from dapo_rl import models
from dapo_rl.data.arithmetic import Arithmetic
from dapo_rl.data.templates import build_prompt
from dapo_rl.eval import evaluate
from dapo_rl.rewards import get_verifier, score_all
from dapo_rl.rollout import HFEngine

RESULTS = Path(__file__).resolve().parent / "results"


def sampled_stats(
    engine, tok, problems, template: str, max_new: int, g: int, temperature: float = 1.0
) -> dict:
    """Statistics of G samples per problem at ``temperature``."""
    prompts = [build_prompt(tok, ex.problem, template) for ex in problems]
    ro = engine.generate(
        prompts,
        n=g,
        max_new_tokens=max_new,
        temperature=temperature,
        top_p=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    texts = tok.batch_decode(
        [ids[m.bool()] for ids, m in zip(ro.completion_ids, ro.mask, strict=True)],
        skip_special_tokens=True,
    )
    refs = [ex.answer for ex in problems for _ in range(g)]
    verdicts, _ = score_all(get_verifier("dapo_answer"), texts, refs, timeout=2.0)
    acc = torch.tensor([v.acc for v in verdicts], dtype=torch.float32)
    lens, trunc = ro.lengths.float(), ro.truncated.bool()
    groups = acc.view(-1, g).bool()
    right = acc.bool()
    # "on the way": a whole number equal to the answer already written ("12 + 7 = 19.\nAns")
    pairs = zip(texts, refs, strict=True)
    has_ref = torch.tensor(
        [re.search(rf"(?<!\d){re.escape(r)}(?!\d)", t) is not None for t, r in pairs]
    )

    def mean(x: torch.Tensor):
        return round(float(x.mean()), 3) if len(x) else None

    return {
        f"avg@{g}": mean(acc),
        "zero_var_frac": mean((groups.all(1) | (~groups).all(1)).float()),
        "all_wrong_frac": mean((~groups).all(1).float()),
        "len_mean": mean(lens),
        "len_p50": float(lens.quantile(0.5)),
        "len_p90": float(lens.quantile(0.9)),
        "truncated_frac": mean(trunc.float()),
        "len_correct": mean(lens[right]),
        "len_wrong": mean(lens[~right]),
        "len_p90_correct": float(lens[right].quantile(0.9)) if right.any() else None,
        "len_p90_wrong": float(lens[~right].quantile(0.9)) if (~right).any() else None,
        "acc_of_truncated": mean(acc[trunc]),
        "truncated_with_answer": mean(has_ref[trunc].float()),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--problems", type=int, default=64)
    p.add_argument("--templates", default="dapo_oneshot,dapo")
    p.add_argument("--max-value", type=int, default=20)
    p.add_argument("--num-terms", type=int, default=2)
    p.add_argument("--ops", default="+")
    p.add_argument("--max-new-tokens", default="64", help="comma-separated generation limits")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--temperatures", default="1.0", help="comma-separated sampling temperatures")
    p.add_argument("--out", default="calibration.json", help="file name under results/")
    args = p.parse_args()
    tok = models.load_tokenizer("smollm2-135m-instruct")
    model = models.load_model("smollm2-135m-instruct").eval()
    engine = HFEngine(model, tok, batch_size=128)
    task = Arithmetic(1, args.max_value, args.num_terms, args.ops)
    problems = task.held_out(0, args.problems)
    g, rows = args.group_size, []
    for template in args.templates.split(","):
        for max_new in (int(x) for x in args.max_new_tokens.split(",")):
            start = time.perf_counter()
            greedy = evaluate(
                engine, tok, problems, "dapo_answer", template=template, max_new_tokens=max_new
            )
            for temp in (float(x) for x in args.temperatures.split(",")):
                stats = sampled_stats(engine, tok, problems, template, max_new, g, temp)
                rows.append(
                    {
                        "template": template,
                        "max_new_tokens": max_new,
                        "temperature": temp,
                        "greedy_acc": greedy["acc"],
                        **stats,
                        "seconds": round(time.perf_counter() - start, 1),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
                start = time.perf_counter()
    RESULTS.mkdir(exist_ok=True)
    settings = {
        k: v for k, v in vars(args).items() if k not in ("out", "templates", "temperatures")
    }
    (RESULTS / args.out).write_text(json.dumps({**settings, "rows": rows}, indent=2))
    keys = ("template", "max_new_tokens", "temperature")
    cols = [k for k in rows[0] if k not in (*keys, "seconds")]
    print("| template | max_new_tokens | temperature | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 3) + "|")
    for r in rows:
        cells = " | ".join("n/a" if r[c] is None else str(r[c]) for c in cols)
        print(f"| {r['template']} | {r['max_new_tokens']} | {r['temperature']} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
