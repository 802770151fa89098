"""Where does the base model land on the arithmetic task? (the default's calibration)

    python benchmarks/calibrate.py [--problems 64] [--templates dapo_oneshot,dapo]

For each prompt template: greedy accuracy on held-out problems, and at temperature 1.0 the
mean accuracy over G=8 samples per problem and the share of zero-variance groups (all
right or all wrong), which is what dynamic sampling throws away. Groups need variance for
GRPO to learn, so the default template and difficulty should land at roughly 15-50%
sampled accuracy. Prints a markdown table; saves benchmarks/results/calibration.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from dapo_rl import models
from dapo_rl.data.arithmetic import Arithmetic
from dapo_rl.eval import evaluate
from dapo_rl.rollout import HFEngine

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--problems", type=int, default=64)
    p.add_argument("--templates", default="dapo_oneshot,dapo")
    p.add_argument("--max-value", type=int, default=20)
    p.add_argument("--group-size", type=int, default=8)
    args = p.parse_args()
    tok = models.load_tokenizer("smollm2-135m-instruct")
    model = models.load_model("smollm2-135m-instruct").eval()
    engine = HFEngine(model, tok, batch_size=128)
    problems = Arithmetic(1, args.max_value, 2, "+").held_out(0, args.problems)
    verifier = "dapo_answer"
    rows = []
    for template in args.templates.split(","):
        start = time.perf_counter()
        res = evaluate(
            engine,
            tok,
            problems,
            verifier,
            template=template,
            max_new_tokens=64,
            k=args.group_size,
            temperature=1.0,
            generator=torch.Generator().manual_seed(0),
        )
        k = args.group_size
        rows.append(
            {
                "template": template,
                "greedy_acc": res["acc"],
                f"avg@{k}": res[f"avg@{k}"],
                "zero_var_frac": res.get(f"zero_var@{k}"),
                "pass@k": res[f"pass@{k}"],
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "calibration.json").write_text(
        json.dumps({"problems": args.problems, "max_value": args.max_value, "rows": rows}, indent=2)
    )
    print(
        f"| template | greedy acc | sampled acc (T=1, avg@{k}) | zero-variance groups | pass@{k} |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        zv = "n/a" if r["zero_var_frac"] is None else f"{r['zero_var_frac']:.2f}"
        print(
            f"| {r['template']} | {r['greedy_acc']:.3f} | {r[f'avg@{k}']:.3f} | {zv} | "
            f"{r['pass@k']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
