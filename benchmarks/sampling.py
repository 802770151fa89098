"""Does the sampler waste less? Plain DAPO dynamic sampling against carry-over + predictive skip.

    python benchmarks/sampling.py                                   # 40 steps, eval every 5
    python benchmarks/sampling.py --steps 100 --eval-every 10 -- data.max_value=15
    PYTHONPATH=src:tests/train python benchmarks/sampling.py --model tiny-random --steps 4 \\
        --eval-every 2 --eval-size 8 -- rewards.fn=toy_rewards:length_parity \\
        rollout.max_new_tokens=8 algo.overlong_buffer=4 data.max_value=4   # CPU smoke test

Runs ``dapo train`` twice with the same seed, model and task, each in its own run
directory under ``--runs``:

- ``plain``: ``algo.predictive_skip=false algo.carry_over=false`` (DAPO's dynamic sampling
  with oversampled refills: surplus informative groups are thrown away);
- ``sampler``: ``algo.predictive_skip=true algo.carry_over=true`` plus ``--sampler-args``.

Everything after ``--`` goes to both runs (the arm's own keys win). The trainer uses a GPU
when there is one. Per run it reports the wall time of the whole command, the generated
tokens (the sum of ``ds/gen_tokens``) and generated groups, the held-out accuracy curve
with the tokens and training time (sum of ``time/step``, evaluation excluded) spent by
each evaluation, and the zero-variance, skip and carry counts. Then it compares the two:
the tokens and training time each needed to first reach the plain run's final held-out
accuracy (or, when the sampler run never reaches it, the highest accuracy both reached),
and the accuracy each had reached by the same token budget (the smaller run's total).

History only helps when prompts come back: for the arithmetic task the number of distinct
training problems (the problem space minus the held-out set) is printed and saved with
how many times, on average, each was drawn. The default task (sums of two integers from
1 to 20, 200 held out) leaves 200 training problems.

Writes benchmarks/results/sampling.json (or ``--out``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from learning import run_train  # the same dapo train invocation

from dapo_rl.config import build, parse_override
from dapo_rl.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
ARMS = {
    "plain": ["algo.predictive_skip=false", "algo.carry_over=false"],
    "sampler": ["algo.predictive_skip=true", "algo.carry_over=true"],
}


def distinct_problems(overrides: list[str]) -> int | None:
    """Distinct training problems of an arithmetic task (None for a file task)."""
    cfg = build(overrides=dict(parse_override(o) for o in overrides))
    d = cfg.data
    if d.task != "arithmetic":
        return None
    from dapo_rl.data.arithmetic import Arithmetic

    space = (d.max_value - d.min_value + 1) ** d.num_terms * len(set(d.ops)) ** (d.num_terms - 1)
    held_out = Arithmetic(d.min_value, d.max_value, d.num_terms, d.ops).held_out(0, cfg.eval.size)
    return space - len(held_out)


def curve(recs: list[dict], group_size: int) -> tuple[list[dict], dict]:
    """The evaluation points (step, acc, tokens and training seconds spent so far) and the
    run's totals."""
    tokens = seconds = groups = 0.0
    totals = dict.fromkeys(("zero_var", "skipped", "carried", "predicted", "predicted_n"), 0.0)
    points = []
    for r in recs:
        if r["step"] > 0:
            tokens += r.get("ds/gen_tokens", 0)
            seconds += r.get("time/step", 0.0)
            n = round(r["ds/completions_per_kept_group"] * r["ds/kept_groups"] / group_size)
            groups += n
            totals["zero_var"] += r["ds/zero_var_frac"] * n
            totals["skipped"] += r.get("ds/skipped_prompts", 0)
            totals["carried"] += r.get("ds/carried_groups", 0)
            if "ds/predicted_zero_var_frac" in r:
                totals["predicted"] += r["ds/predicted_zero_var_frac"]
                totals["predicted_n"] += 1
        if "eval/acc" in r:
            points.append(
                {"step": r["step"], "acc": r["eval/acc"], "gen_tokens": tokens, "train_s": seconds}
            )
    return points, {
        "gen_tokens": tokens,
        "gen_groups": groups,
        "train_s": seconds,
        "zero_var_frac": totals["zero_var"] / max(groups, 1),
        "skipped_prompts": totals["skipped"],
        "carried_groups": totals["carried"],
        "mean_predicted_zero_var_frac": totals["predicted"] / totals["predicted_n"]
        if totals["predicted_n"]
        else None,
        "final_explore": [recs[-1].get("ds/explore_easy"), recs[-1].get("ds/explore_hard")],
    }


def first_reaching(points: list[dict], acc: float) -> dict | None:
    return next((p for p in points if p["acc"] >= acc), None)


def acc_within(points: list[dict], tokens: float) -> float:
    """Held-out accuracy of the last evaluation made within ``tokens`` generated tokens."""
    return [p for p in points if p["gen_tokens"] <= tokens][-1]["acc"]


def compare(runs: dict) -> dict:
    plain, new = runs["plain"]["curve"], runs["sampler"]["curve"]
    target = plain[-1]["acc"]
    if first_reaching(new, target) is None:  # the highest accuracy both runs reached
        target = min(max(p["acc"] for p in plain), max(p["acc"] for p in new))
    budget = min(runs[name]["gen_tokens"] for name in runs)
    out = {"target_acc": target, "token_budget": budget}
    out["reached_at_start"] = plain[0]["acc"] >= target  # then the comparison says nothing
    for name, run in runs.items():
        hit = first_reaching(run["curve"], target)
        out[name] = {
            "tokens_to_target": None if hit is None else hit["gen_tokens"],
            "train_s_to_target": None if hit is None else round(hit["train_s"], 1),
            "step_to_target": None if hit is None else hit["step"],
            "acc_at_budget": acc_within(run["curve"], budget),
        }
    return out


def table(runs: dict, cmp: dict) -> str:
    rows = [
        "| run | wall | gen tokens | groups generated | zero-var share | skipped | carried "
        f"| final acc | tokens to acc {cmp['target_acc']:.3f} | train s to it "
        f"| acc at {cmp['token_budget']:.0f} tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        c = cmp[name]
        to_target = (
            f"{c['tokens_to_target']:.0f} (step {c['step_to_target']}) | {c['train_s_to_target']}"
            if c["tokens_to_target"] is not None
            else "not reached | -"
        )
        rows.append(
            f"| {name} | {r['wall_s']:.0f} s | {r['gen_tokens']:.0f} | {r['gen_groups']:.0f} "
            f"| {r['zero_var_frac']:.3f} | {r['skipped_prompts']:.0f} | {r['carried_groups']:.0f} "
            f"| {r['curve'][-1]['acc']:.3f} | {to_target} | {c['acc_at_budget']:.3f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--eval-size", type=int, default=200)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler-args", default="", help="extra KEY=VALUE for the sampler run")
    p.add_argument("--runs", default=str(ROOT / "runs" / "sampling"), help="run directories")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sampling.json"))
    p.add_argument("extra", nargs="*", help="dapo train KEY=VALUE for both runs (after --)")
    args = p.parse_args(argv)
    common = [
        f"model.name={args.model}",
        f"train.steps={args.steps}",
        f"eval.every={args.eval_every}",
        f"eval.size={args.eval_size}",
        f"run.seed={args.seed}",
        *args.extra,
    ]
    arms = {**ARMS, "sampler": ARMS["sampler"] + shlex.split(args.sampler_args)}
    cfg = build(overrides=dict(parse_override(o) for o in common))
    runs = {}
    for name, own in arms.items():
        run_dir = Path(args.runs) / name
        wall = run_train(run_dir, common + own)
        points, totals = curve(read_metrics(run_dir), cfg.rollout.group_size)
        runs[name] = {"overrides": common + own, "wall_s": round(wall, 1), **totals}
        runs[name]["curve"] = points
    cmp = compare(runs)
    distinct = distinct_problems(common)
    drawn = runs["plain"]["gen_groups"]  # the plain run draws each prompt it generates
    out = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "distinct_training_problems": distinct,
        "plain_draws_per_problem": round(drawn / distinct, 2) if distinct else None,
        "runs": runs,
        "comparison": cmp,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print()
    print(table(runs, cmp))
    if cmp["reached_at_start"]:
        print(f"\nthe untrained policy already scores {cmp['target_acc']:.3f}: no speed-up to see")
    if distinct:
        print(
            f"\n{distinct} distinct training problems; the plain run drew each "
            f"{out['plain_draws_per_problem']} times on average"
        )
    for name, r in runs.items():
        shown = ", ".join(
            f"({p['step']}, {p['acc']:.3f}, {p['gen_tokens']:.0f})" for p in r["curve"]
        )
        print(f"{name} eval curve (step, acc, gen tokens): {shown}")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
