"""Speed against TRL: this project's trainer and TRL's GRPOTrainer on the same RL step.

    python benchmarks/trl_compare.py                        # warm-up + 3 timed steps each
    python benchmarks/trl_compare.py --steps 1 --model tiny-random --no-defaults   # quick check
    python benchmarks/trl_compare.py --bf16                 # adds the two bf16 rows

One invocation runs, back to back and each in its own process (so peak memory is its own):
1. ``ours``: this project's ``train_step`` with dynamic sampling and overlong shaping off,
   the like-for-like row (TRL has neither);
2. ``ours-defaults``: the same with the ``dapo`` defaults (skip with ``--no-defaults``);
3. ``trl``: TRL's ``GRPOTrainer`` (needs ``pip install 'dapo-rl[bench]'``);
4. ``generate``: sampling alone, ``HFEngine.generate`` against ``model.generate``;
with ``--bf16`` also ``HFEngine.generate`` from a bf16 working copy;
5. with ``--bf16``: ``ours-bf16``, row 1 with ``model.dtype=bfloat16`` (bf16 working copy,
   float32 master weights, old log-probs recomputed in bf16), and ``trl-defaults``, TRL in its
   own defaults (bf16 autocast and gradient checkpointing), the bf16 comparison.
The processes are benchmarks/compare_workers.py; this one measures the matmul peak, starts
them, and turns what they report into tokens, FLOPs and rates, the same way for each.
The model (the SmolLM2 safetensors cache of ``dapo_rl.models``), the prompts (the run's
``PromptStream`` under the ``dapo_oneshot`` template), the verifier (``dapo_answer``), the
batch shape and the optimizer settings are the same in every process. Each trainer runs one
warm-up step and ``--steps`` timed steps; one RL step is one generation of P*G completions and
K optimizer steps over it. The float32 and bfloat16 ``torch.mm`` peaks are measured in this
process with the same thread count, before and after the runs; the better of the two of the
dtype a row computes in is its MFU denominator. Every number is defined in docs/benchmarks.md;
the summary is printed and saved to benchmarks/results/trl_compare.json (``--out``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKERS = Path(__file__).with_name("compare_workers.py")


def _spawn(role: str, spec: dict) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(spec["threads"]),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = Path(f.name)
    print(f"== {role}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    cmd = [sys.executable, str(WORKERS), role, json.dumps(spec), str(result)]
    code = subprocess.run(cmd, env=env).returncode
    if code:
        raise SystemExit(f"error: the {role} process failed (exit status {code})")
    out = json.loads(result.read_text())
    result.unlink()
    out["process_s"] = time.perf_counter() - t
    return out


def _model_dir(name: str, seed: int) -> str:
    from dapo_rl import models

    if name == models.SMOLLM2:
        return str(models.smollm2_dir())
    if name == models.TINY:  # saved once so that both trainers load the same directory
        dest = Path(tempfile.mkdtemp(prefix="dapo-bench-tiny-"))
        models.load_model(models.TINY, seed=seed).save_pretrained(dest)
        models.load_tokenizer(models.TINY).save_pretrained(dest)
        return str(dest)
    return name


def _rate(amount: float, seconds: float) -> float | None:
    return amount / seconds if seconds > 0 else None


# The dtype each row's matrix products run in: its MFU is against that dtype's peak.
ROW_DTYPE = {
    "ours": "float32",
    "ours-defaults": "float32",
    "trl": "float32",
    "ours-bf16": "bfloat16",
    "trl-defaults": "bfloat16",
}


def summarise(raw: dict, shape, peak: float, group: int, executed_group: int) -> dict:
    """The timed steps' means and rates (docs/benchmarks.md defines each).

    ``executed_group`` is how many rows share one prompt pass in the trainer's update as it
    runs (G for ours, 1 for TRL, which feeds every sequence whole): it gives the FLOPs the
    update executes, beside the FLOPs the step needs.
    """
    from dapo_rl.perf import TRAIN_FACTOR, batch_flops, mfu

    steps = raw["steps"][1:]  # the first step is the warm-up
    n = len(steps)
    gens = [g for s in steps for g in s["gen"]]
    gen_s = sum(g["s"] for g in gens)
    gen_tokens = sum(sum(g["completion_lens"]) for g in gens)
    gen_flops = sum(batch_flops(shape, g["prompt_lens"], g["completion_lens"], group) for g in gens)
    trained = [s["train"] for s in steps if s["train"]]
    upd_s = sum(s["update_s"] for s in steps)
    train_tokens = sum(sum(t["prompt_lens"]) + sum(t["completion_lens"]) for t in trained)
    train_flops = TRAIN_FACTOR * sum(
        batch_flops(shape, t["prompt_lens"], t["completion_lens"], group) for t in trained
    )
    executed = TRAIN_FACTOR * sum(
        batch_flops(shape, t["prompt_lens"], t["completion_lens"], executed_group) for t in trained
    )
    wall = sum(s["wall"] for s in steps)
    old = sum(s["old_logp_s"] for s in steps)
    return {
        "s_per_step": wall / n,
        "gen_s_per_step": gen_s / n,
        "update_s_per_step": upd_s / n,
        "old_logp_s_per_step": old / n,
        "other_s_per_step": (wall - gen_s - upd_s - old) / n,
        "completions_per_step": sum(len(g["completion_lens"]) for g in gens) / n,
        "mean_completion_len": gen_tokens / max(sum(len(g["completion_lens"]) for g in gens), 1),
        # decode steps of a batch: its longest completion (one long answer makes all wait)
        "mean_longest_completion": sum(max(g["completion_lens"]) for g in gens) / len(gens),
        "gen_tokens_per_s": _rate(gen_tokens, gen_s),
        "train_tokens_per_s": _rate(train_tokens, upd_s),
        "train_tflops_per_step": train_flops / n / 1e12,
        "gen_tflops_per_step": gen_flops / n / 1e12,
        "mfu_train": mfu(train_flops, upd_s, peak) if upd_s else None,
        "mfu_gen": mfu(gen_flops, gen_s, peak) if gen_s else None,
        "train_tflops_executed_per_step": executed / n / 1e12,
        "train_executed_utilisation": mfu(executed, upd_s, peak) if upd_s else None,
        "peak_rss_mib": raw["peak_rss_mib"],
        "load_s": raw["load_s"],
        "threads": raw["threads"],
        "warmup_s": raw["steps"][0]["wall"],
        "steps": raw["steps"],
    }


_SECONDS = (
    "s_per_step",
    "gen_s_per_step",
    "update_s_per_step",
    "old_logp_s_per_step",
    "other_s_per_step",
)
_RATES = ("gen_tokens_per_s", "train_tokens_per_s")
_MFU = ("mfu_train", "mfu_gen")


def _table(rows: dict) -> str:
    head = (
        "| run | dtype | s/step | gen s | update s | old-logp s | other s | gen tok/s "
        "| train tok/s | MFU train | MFU gen | peak RSS MiB |\n|" + "---|" * 12
    )
    lines = [head]
    for name, r in rows.items():
        cells = [ROW_DTYPE[name]] + [f"{r[k]:.2f}" for k in _SECONDS]
        cells += ["-" if r[k] is None else f"{r[k]:.0f}" for k in _RATES]
        cells += ["-" if r[k] is None else f"{100 * r[k]:.1f}%" for k in _MFU]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['peak_rss_mib']:.0f} |")
    lines += [
        "",
        "| run | completions/step | mean completion len | longest completion "
        "| train TFLOP/step | gen TFLOP/step | update TFLOP/step executed | executed / peak "
        "| warm-up step s | load s |\n|" + "---|" * 10,
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['completions_per_step']:.0f} | {r['mean_completion_len']:.1f} | "
            f"{r['mean_longest_completion']:.1f} | "
            f"{r['train_tflops_per_step']:.3f} | {r['gen_tflops_per_step']:.3f} | "
            f"{r['train_tflops_executed_per_step']:.3f} | "
            f"{100 * (r['train_executed_utilisation'] or 0):.1f}% | "
            f"{r['warmup_s']:.1f} | {r['load_s']:.1f} |"
        )
    return "\n".join(lines)


def _generation_summary(raw: dict) -> dict:
    out = {}
    for name in [n for n in ("ours", "hf", "ours_bf16") if n in raw["rounds"][0]]:
        s = sum(r[name]["s"] for r in raw["rounds"])
        tokens = sum(r[name]["tokens"] for r in raw["rounds"])
        out[name] = {"s": s, "tokens": tokens, "tokens_per_s": tokens / s}
    out["speedup"] = out["ours"]["tokens_per_s"] / out["hf"]["tokens_per_s"]
    if "ours_bf16" in out:  # the bf16 working copy's sampling against the float32 engine's
        out["bf16_speedup"] = out["ours_bf16"]["tokens_per_s"] / out["ours"]["tokens_per_s"]
    out["same_completions"] = sum(r["same_completions"] for r in raw["rounds"])
    out["completions"] = sum(r["completions"] for r in raw["rounds"])
    out["rounds"] = raw["rounds"]
    out["peak_rss_mib"] = raw["peak_rss_mib"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--model", default="smollm2-135m-instruct", help="alias or local directory")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step (P)")
    p.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    p.add_argument("--mini-batches", type=int, default=4, help="optimizer steps per rollout (K)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    p.add_argument("--gen-rounds", type=int, default=3, help="timed sampling-only batches")
    p.add_argument("--no-defaults", action="store_true", help="skip the ours-defaults row")
    p.add_argument(
        "--bf16", action="store_true", help="add the ours-bf16 and trl-defaults rows (bf16)"
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "trl_compare.json"))
    args = p.parse_args()
    if importlib.util.find_spec("trl") is None:
        print("error: TRL is not installed: pip install 'dapo-rl[bench]'", file=sys.stderr)
        return 2
    if (args.prompts * args.group) % args.mini_batches:
        print("error: --prompts * --group must divide into --mini-batches", file=sys.stderr)
        return 2
    import torch
    import transformers
    import trl
    from transformers import AutoConfig

    from dapo_rl.perf import ModelShape, best_peaks, matmul_peaks, peak_for

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    started, load_before = time.perf_counter(), os.getloadavg()
    peaks_before = matmul_peaks(repeats=10)
    model_dir = _model_dir(args.model, args.seed)
    spec = {
        "model_dir": model_dir,
        "prompts": args.prompts,
        "group": args.group,
        "mini_batches": args.mini_batches,
        "max_new_tokens": args.max_new_tokens,
        "lr": args.lr,
        "seed": args.seed,
        "threads": threads,
        "steps": args.steps,
        "gen_rounds": args.gen_rounds,
        "bf16": args.bf16,
    }
    shape = ModelShape.from_config(AutoConfig.from_pretrained(model_dir))
    roles = ["ours", *([] if args.no_defaults else ["ours-defaults"]), "trl"]
    roles += ["ours-bf16", "trl-defaults"] if args.bf16 else []
    try:
        raw = {role: _spawn(role, spec) for role in roles}
        gen_raw = _spawn("generate", spec)
    finally:
        if model_dir.startswith(tempfile.gettempdir()) and "dapo-bench-tiny-" in model_dir:
            shutil.rmtree(model_dir, ignore_errors=True)
    peaks_after = matmul_peaks(repeats=10)
    load_after = os.getloadavg()
    peaks = best_peaks(peaks_before, peaks_after)
    rows = {
        role: summarise(
            raw[role],
            shape,
            peak_for(peaks, ROW_DTYPE[role]),
            args.group,
            1 if role.startswith("trl") else args.group,  # TRL feeds every sequence whole
        )
        for role in roles
    }
    generation = _generation_summary(gen_raw)
    ratio = rows["ours"]["s_per_step"] / rows["trl"]["s_per_step"]
    print("\n" + _table(rows))
    print(f"\ns/step this/TRL (like for like): {ratio:.3f} (speed-up {1 / ratio:.2f}x)")
    ratio_bf16 = (
        rows["ours-bf16"]["s_per_step"] / rows["trl-defaults"]["s_per_step"] if args.bf16 else None
    )
    if ratio_bf16 is not None:
        print(
            f"s/step this in bf16 / TRL in its defaults (bf16, gradient checkpointing): "
            f"{ratio_bf16:.3f}; bf16 sampling {generation['bf16_speedup']:.2f}x the fp32 engine"
        )
    print(
        f"sampling alone: HFEngine.generate {generation['ours']['tokens_per_s']:.0f} tok/s, "
        f"model.generate {generation['hf']['tokens_per_s']:.0f} tok/s "
        f"({generation['speedup']:.2f}x; {generation['same_completions']}/"
        f"{generation['completions']} completions token for token the same)"
    )
    print(
        f"matmul peak fp32 {peaks['float32'] / 1e9:.1f}, bf16 {peaks['bfloat16'] / 1e9:.1f} "
        f"GFLOP/s ({threads} threads); "
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"TRL saw the same prompt tokens: {raw['trl']['prompts_match']}"
    )
    summary = {
        "command": "python benchmarks/trl_compare.py " + " ".join(sys.argv[1:]),
        "settings": {k: v for k, v in spec.items() if k != "model_dir"} | {"model": args.model},
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
        },
        "matmul_peak_gflops": {
            when: {k: v / 1e9 for k, v in m.items()}
            for when, m in (("before", peaks_before), ("after", peaks_after))
        },
        "load_average_1min": {"before": load_before[0], "after": load_after[0]},
        "harness_s": time.perf_counter() - started,
        "trl_prompts_match": raw["trl"]["prompts_match"],
        "ratio_s_per_step_ours_over_trl": ratio,
        "ratio_s_per_step_ours_bf16_over_trl_defaults": ratio_bf16,
        "rows": rows,
        "generation": generation,
        "trl_config": raw["trl"]["trl_config"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
