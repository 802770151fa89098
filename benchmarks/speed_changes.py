"""What each speed change buys: our trainer's step with one change switched off at a time.

    python benchmarks/speed_changes.py                 # warm-up + 3 timed steps per row
    python benchmarks/speed_changes.py --steps 1 --model tiny-random --max-new-tokens 16

Every row is the like-for-like row of ``benchmarks/trl_compare.py`` (SmolLM2-135M-Instruct,
float32, P = 4, G = 8, 64 new tokens, K = 4, dynamic sampling and overlong shaping off, the
same seed), run in its own process, with the keys in the table's ``change`` column set:

- ``baseline``: every change on (the defaults);
- ``train.share_prompt=false``: the update encodes the prompt once per completion instead
  of once per group;
- ``train.recompute_old_logprobs=true``: an extra forward pass for the old log-probs
  instead of the sampler's own;
- ``model.dtype=bfloat16``: bfloat16 autocast for every forward pass (a candidate change,
  not a default).

Seconds are means over the timed steps (the warm-up step is dropped). Saved to
``benchmarks/results/speed_changes.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from trl_compare import _model_dir, _spawn  # the same worker processes and model directory

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "baseline": {},
    "train.share_prompt=false": {"train.share_prompt": False},
    "train.recompute_old_logprobs=true": {"train.recompute_old_logprobs": True},
    "model.dtype=bfloat16": {"model.dtype": "bfloat16"},
}


def summarise(out: dict) -> dict:
    steps = out["steps"][1:]  # the first step warms up
    n = max(len(steps), 1)
    gen = sum(sum(g["s"] for g in s["gen"]) for s in steps) / n
    gen_tokens = sum(sum(sum(g["completion_lens"]) for g in s["gen"]) for s in steps) / n
    train_tokens = sum(
        sum(s["train"]["prompt_lens"]) + sum(s["train"]["completion_lens"])
        for s in steps
        if s["train"]
    )
    update = sum(s["update_s"] for s in steps) / n
    return {
        "s_per_step": sum(s["wall"] for s in steps) / n,
        "generate_s": gen,
        "update_s": update,
        "old_logprob_s": sum(s["old_logp_s"] for s in steps) / n,
        "gen_tokens_per_s": gen_tokens / max(gen, 1e-9),
        "train_tokens_per_s": train_tokens / n / max(update, 1e-9),
        "peak_rss_mib": out["peak_rss_mib"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed_changes.json"))
    args = p.parse_args()
    threads = args.threads or os.cpu_count() or 1
    spec = {
        "model_dir": _model_dir(args.model, 0),
        "prompts": 4,
        "group": 8,
        "mini_batches": 4,
        "max_new_tokens": args.max_new_tokens,
        "lr": 1e-5,
        "seed": 0,
        "threads": threads,
        "steps": args.steps,
    }
    rows = {}
    for name, extra in VARIANTS.items():
        rows[name] = summarise(_spawn("ours", {**spec, "extra": extra}))
    base = rows["baseline"]["s_per_step"]
    print(
        "| change | s/step | vs baseline | generate s | update s | old log-prob s | "
        "gen tok/s | train tok/s | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['s_per_step']:.2f} | {r['s_per_step'] / base:.2f}x | "
            f"{r['generate_s']:.2f} | {r['update_s']:.2f} | {r['old_logprob_s']:.2f} | "
            f"{r['gen_tokens_per_s']:.0f} | {r['train_tokens_per_s']:.0f} | "
            f"{r['peak_rss_mib']:.0f} |"
        )
    Path(args.out).write_text(json.dumps({"spec": spec, "rows": rows}, indent=1))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
