"""How often would dual-clip bind? Ratios of negative-advantage tokens in real updates.

    python benchmarks/dual_clip.py                          # 5 default steps (SmolLM2, dapo)
    python benchmarks/dual_clip.py --steps 2 model.name=tiny-random rollout.max_new_tokens=16

Dual-clip (arXiv 1912.09729; verl's ``clip_ratio_c``, c = 10 in the DAPO scripts) caps the
loss of a token with advantage A < 0 at c * |A|, which binds only where its ratio
pi / pi_old exceeds c. This runs ``train_step`` with the given config (the ``dapo`` defaults
plus any KEY=VALUE overrides, dual-clip off) and records, for every token of every
optimizer mini-batch that enters the loss with A < 0, its ratio: how many exceed 3 (verl's
default c) and 10 (the DAPO scripts' c), and the largest. With dual-clip off the run is the
one the preset trains, so a count of 0 means the cap would never have changed a gradient.
Saved to ``benchmarks/results/dual_clip.json`` (``--out``) after every step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dapo_rl.algo import policy_ratio
from dapo_rl.config import build, parse_override
from dapo_rl.train import update
from dapo_rl.train.loop import build_state
from dapo_rl.train.step import train_step

ROOT = Path(__file__).resolve().parents[1]


def _spy(tally: dict) -> None:
    """Wrap the update's surrogate and aggregation to read each micro-batch's ratios."""
    surrogate, aggregate = update.clipped_surrogate, update.aggregate
    last = {}

    def spy_surrogate(logp, old_logp, adv, **kw):
        last["ratio"] = policy_ratio(logp.detach() - old_logp.detach())  # (b, T)
        last["neg"] = (adv < 0)[:, None] if adv.dim() == 1 else adv < 0
        return surrogate(logp, old_logp, adv, **kw)

    def spy_aggregate(loss_tok, mask, mode, **kw):
        r = last["ratio"][mask.bool() & last["neg"].expand_as(mask)]
        tally["neg_tokens"] += r.numel()
        tally["above_3"] += int((r > 3).sum())
        tally["above_10"] += int((r > 10).sum())
        tally["max_ratio"] = max(tally["max_ratio"], float(r.max()) if r.numel() else 1.0)
        return aggregate(loss_tok, mask, mode, **kw)

    update.clipped_surrogate, update.aggregate = spy_surrogate, spy_aggregate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dual_clip.json"))
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    args = ap.parse_args()
    overrides = dict(parse_override(o) for o in args.overrides)
    cfg = build(overrides={"run.dir": "/tmp/dual_clip_bench", **overrides})
    state = build_state(cfg)
    tally = {"neg_tokens": 0, "above_3": 0, "above_10": 0, "max_ratio": 1.0}  # running
    _spy(tally)
    per_step, t0 = [], time.perf_counter()
    command = " ".join(["python benchmarks/dual_clip.py --steps", str(args.steps), *args.overrides])
    for step in range(1, args.steps + 1):
        state.step = step
        before = dict(tally, max_ratio=1.0)
        tally["max_ratio"], m = 1.0, train_step(state)
        per_step.append(
            {
                "step": step,
                **{k: tally[k] - before[k] for k in ("neg_tokens", "above_3", "above_10")},
                "max_ratio": tally["max_ratio"],
                "clip/low_frac": m.get("clip/low_frac"),
                "clip/high_frac": m.get("clip/high_frac"),
            }
        )
        print(json.dumps(per_step[-1]), flush=True)
        neg = sum(s["neg_tokens"] for s in per_step)
        out = {  # rewritten after every step: a run stopped early keeps what it measured
            "command": command,
            "steps_done": step,
            "torch_threads": torch.get_num_threads(),
            "wall_s": time.perf_counter() - t0,
            "neg_tokens": neg,
            "share_above_3": sum(s["above_3"] for s in per_step) / max(neg, 1),
            "share_above_10": sum(s["above_10"] for s in per_step) / max(neg, 1),
            "max_ratio": max(s["max_ratio"] for s in per_step),
            "steps": per_step,
        }
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "steps"}, indent=2))


if __name__ == "__main__":
    main()
