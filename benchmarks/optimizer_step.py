"""One optimizer step of the bf16 run: default against fused AdamW, loop against foreach refresh.

    python benchmarks/optimizer_step.py                 # SmolLM2-135M, 6 alternating rounds
    python benchmarks/optimizer_step.py --model tiny-random --rounds 2   # check

The float32 master's AdamW step and the working copy's refresh (``train/precision.py``) run
once per optimizer step, K times per update. Each round times both variants in alternating
order on the same gradients (lr 0 keeps the weights), so the per-round ratios hold on a
loaded machine; the medians and ratios are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args()
    from dapo_rl.models import load_model
    from dapo_rl.train.precision import Precision

    model = load_model(args.model)
    precision = Precision(model, torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    for q in model.parameters():
        q.grad = torch.randn(q.shape, generator=g) * 1e-3

    @torch.no_grad()
    def loop_refresh():  # the refresh as it was: one copy per parameter from Python
        for w, m in precision._pairs:
            w.copy_(m)

    steps = {f: torch.optim.AdamW(model.parameters(), lr=0.0, fused=f).step for f in (False, True)}
    for step in steps.values():
        step()  # the moments are allocated once, as in a run
    variants = {
        "adamw_default": steps[False],
        "adamw_fused": steps[True],
        "refresh_loop": loop_refresh,
        "refresh_foreach": precision.refresh,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name in list(variants)[:: 1 if r % 2 == 0 else -1]:
            times[name].append(_timed(variants[name]))

    def ratios(a: str, b: str) -> list[float]:
        return [round(x / y, 2) for x, y in zip(times[a], times[b], strict=True)]

    print(
        json.dumps(
            {
                "command": "python benchmarks/optimizer_step.py " + " ".join(sys.argv[1:]),
                "median_s": {k: sorted(v)[len(v) // 2] for k, v in times.items()},
                "default_over_fused": ratios("adamw_default", "adamw_fused"),
                "loop_over_foreach": ratios("refresh_loop", "refresh_foreach"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
