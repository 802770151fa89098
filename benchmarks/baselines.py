"""Measured baselines: the untrained policy on GSM8K, ASDiv and MATH-500, as `dapo eval` scores it.

    python benchmarks/baselines.py                          # greedy, first 100 problems of each
    python benchmarks/baselines.py --limit 500 --k 8        # + avg@8, pass@8, maj@8
    python benchmarks/baselines.py --limit 3 --max-new-tokens 32 --out /tmp/smoke.json

Data: ``../shared/data`` beside the checkout (gsm8k/test.jsonl, asdiv/test.jsonl,
math500/test.jsonl); a subset is the first ``--limit`` rows of a file, in file order, so every
run of the same limit sees the same problems. Each file is scored with the verifier its
answers need (``eval.DEFAULT_VERIFIERS``: gsm8k for GSM8K and ASDiv, math for MATH-500) under
the ``dapo`` template (the training prompt), greedy; ``--k`` adds k samples per problem at
``--temperature`` / ``--top-p`` (DAPO's evaluation setting, 1.0 / 0.7, by default). The model
loads once. Wall time is measured per benchmark (generation and scoring).

Writes benchmarks/results/baselines.json (the exact command, settings, metrics and wall time
of each benchmark) and prints a markdown table and the command.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from dapo_rl.config import EvalConfig
from dapo_rl.eval import load_policy, markdown_table, run_file
from dapo_rl.eval.table import cell

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS = {
    "gsm8k": DATA / "gsm8k" / "test.jsonl",
    "asdiv": DATA / "asdiv" / "test.jsonl",
    "math500": DATA / "math500" / "test.jsonl",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = EvalConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--limit", type=int, default=100, help="first N problems of each benchmark")
    p.add_argument("--k", type=int, default=0, help="samples per problem (0: greedy only)")
    p.add_argument("--temperature", type=float, default=defaults.temperature)
    p.add_argument("--top-p", type=float, default=defaults.top_p)
    p.add_argument("--template", default="dapo")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64, help="sequences decoded together")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument(
        "--benchmarks", default=",".join(BENCHMARKS), help="comma-separated subset to run"
    )
    p.add_argument("--out", default=str(RESULTS / "baselines.json"))
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> list[dict]:
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.benchmarks.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}: use {', '.join(BENCHMARKS)}")
    policy = load_policy(args.model, batch_size=args.batch_size)
    results = []
    for name in names:
        print(f"{name}: {BENCHMARKS[name]}", flush=True)
        start = time.perf_counter()
        res = run_file(
            BENCHMARKS[name],
            model=args.model,
            template=args.template,
            max_new_tokens=args.max_new_tokens,
            limit=args.limit,
            k=args.k,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            policy=policy,
        )
        results.append({"benchmark": name, **res, "wall_s": round(time.perf_counter() - start, 1)})
    return results


def table(results: list[dict], k: int) -> str:
    sampled = [f"avg@{k}", f"pass@{k}", f"maj@{k}"] if k else []
    keys = ["n", "acc", *sampled, "len_mean", "truncated_frac", "wall_s"]
    header = ["benchmark", "verifier", "n", "greedy acc", *sampled]
    header += ["mean length", "truncated", "wall (s)"]
    rows = [[r["benchmark"], r["verifier"], *(cell(key, r[key]) for key in keys)] for r in results]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = shlex.join(
        ["python", "benchmarks/baselines.py", *(sys.argv[1:] if argv is None else argv)]
    )
    results = run(args)
    out = {
        "command": command,
        "model": args.model,
        "limit": args.limit,
        "k": args.k,
        "max_new_tokens": args.max_new_tokens,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "results": results,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print()
    print(table(results, args.k))
    print(f"\ncommand: {command}\nwritten to {path}")


if __name__ == "__main__":
    main()
