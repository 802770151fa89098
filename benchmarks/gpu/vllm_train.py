"""A short real training run with the vLLM sampler, on one GPU or several (torchrun).

    python benchmarks/gpu/vllm_train.py                      # 1 GPU, vLLM, 20 steps
    python benchmarks/gpu/vllm_train.py --gpus 2             # torchrun, 2 ranks on 2 GPUs
    python benchmarks/gpu/vllm_train.py --engine hf          # the same run with HFEngine
    python benchmarks/gpu/vllm_train.py --name lora -- model.lora_rank=16 train.lr=1e-4

Needs CUDA and ``pip install 'dapo-rl[vllm]'``; exits with a message otherwise. Everything
after ``--`` is passed to ``dapo train``. The run uses SmolLM2-135M-Instruct in bfloat16,
recomputes old log-probs with the trainer and corrects the sampler mismatch with truncated
importance sampling (``algo.tis_cap=2``). The summary (wall time, held-out accuracy,
generation throughput, the ``mismatch/`` metrics) is printed and saved to
benchmarks/results/gpu_<name>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def _check(engine: str, gpus: int) -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device: this benchmark needs a GPU"
    if torch.cuda.device_count() < gpus:
        return f"{gpus} GPUs asked for, {torch.cuda.device_count()} present"
    if engine == "vllm" and importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed: pip install 'dapo-rl[vllm]'"
    return None


def _command(args, run_dir: Path) -> list[str]:
    launch = [sys.executable, "-m", "dapo_rl.cli"]
    if args.gpus > 1:
        launch = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={args.gpus}",
            "-m",
            "dapo_rl.cli",
        ]
    settings = [
        f"run.dir={run_dir}",
        "run.overwrite=true",
        "run.progress=false",
        "model.name=smollm2-135m-instruct",
        "model.dtype=bfloat16",
        f"rollout.engine={args.engine}",
        f"rollout.prompts_per_step={8 * args.gpus}",
        "rollout.group_size=8",
        "rollout.max_new_tokens=128",
        "algo.overlong_buffer=32",
        "train.recompute_old_logprobs=true",
        "train.micro_batch_size=32",
        f"train.steps={args.steps}",
        "train.lr=5e-6",
        "eval.every=10",
        "eval.size=200",
    ]
    if args.engine == "vllm":
        settings.append("algo.tis_cap=2")
    return [*launch, "train", *settings, *args.extra]


def summarise(name: str, run_dir: Path, wall: float, command: list[str]) -> dict:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    steps = [r for r in recs if r["step"] > 0]

    def mean(key: str) -> float | None:
        values = [r[key] for r in steps if key in r]
        return round(statistics.fmean(values), 5) if values else None

    return {
        "name": name,
        "command": " ".join(command[1:]),
        "wall_s": round(wall, 1),
        "steps": len(steps),
        "eval_curve": [(r["step"], r["eval/acc"]) for r in recs if "eval/acc" in r],
        "gen_tokens_per_s": mean("throughput/gen_tokens_per_s"),
        "train_tokens_per_s": mean("throughput/train_tokens_per_s"),
        "step_s": mean("time/step"),
        "mismatch_kl": mean("mismatch/kl"),
        "mismatch_out_of_range_frac": mean("mismatch/out_of_range_frac"),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--engine", choices=("vllm", "hf"), default="vllm")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--name", default=None)
    p.add_argument("extra", nargs="*", help="dapo train overrides (after --)")
    args = p.parse_args()
    problem = _check(args.engine, args.gpus)
    if problem:
        print(f"skipped: {problem}", file=sys.stderr)
        return 2
    name = args.name or f"{args.engine}_{args.gpus}gpu"
    run_dir = ROOT / "runs" / f"gpu_{name}"
    command = _command(args, run_dir)
    print("$", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    summary = summarise(name, run_dir, time.perf_counter() - start, command)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"gpu_{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
