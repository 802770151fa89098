"""bfloat16 on this CPU: matmul peaks, sampling and update speed per precision, decode overhead.

    python benchmarks/bf16_speed.py                    # SmolLM2, 4 prompts x 8, 64 tokens
    python benchmarks/bf16_speed.py --model tiny-random --rounds 1 --max-new-tokens 8  # check

Everything runs in one process, each comparison alternating its variants round by round, so
that the ratios hold on a loaded machine even where the absolute numbers do not:
1. peaks: ``dapo_rl.perf.matmul_peaks`` (``torch.mm`` 2048^2, float32 and bfloat16) and a
   training-shaped linear layer (3000 x 576 -> 1536, SmolLM2's MLP width), per dtype;
2. sampling: ``HFEngine.generate`` from the float32 model and from a bf16 working copy
   (``train/precision.py``), each decoding with the model's forward and with the lean step
   (``rollout/lean.py``; "float32" is the model's forward, the engine before the lean step):
   tokens/s and MFU against the peak of the dtype used;
3. update: ``policy_update`` (K mini-batches, the defaults' micro-batching) on one rollout,
   float32 against the bf16 working copy, with fused AdamW at lr 0 (the run's optimizer
   doing its work, the weights kept): seconds and MFU against each dtype's peak;
4. decode overhead: the time per decode step at batch 1 (almost no arithmetic: what is left
   is Python, dispatch and allocation) and at batch P*G, per precision, and the profiler's
   top operators of one bf16 generation;
5. threads: the peaks and bf16 sampling at each of ``--threads``.
The FLOP counts are ``dapo_rl.perf``'s. Results go to benchmarks/results/bf16_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _linear_peak(dtype: torch.dtype, repeats: int = 5) -> float:
    """Best FLOP/s of a (3000 x 576) @ (576 x 1536) linear layer's forward in ``dtype``."""
    x, w = torch.randn(3000, 576, dtype=dtype), torch.randn(1536, 576, dtype=dtype)
    torch.nn.functional.linear(x, w)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.nn.functional.linear(x, w)
        best = min(best, time.perf_counter() - t)
    return 2 * 3000 * 576 * 1536 / best


def _say(text: str) -> None:
    print(f"[bf16_speed] {text}", file=sys.stderr, flush=True)


def _peaks() -> dict:
    from dapo_rl.perf import PEAK_DTYPES, matmul_peaks

    return {
        "mm_2048": matmul_peaks(),
        "linear_3000x576x1536": {k: _linear_peak(d) for k, d in PEAK_DTYPES.items()},
    }


def _sample(engine, prompts, args, seed: int):
    g = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    ro = engine.generate(prompts, n=args.group, max_new_tokens=args.max_new_tokens, generator=g)
    return ro, time.perf_counter() - t


def _sampling(engines: dict, prompts_of, args, shape, peaks) -> dict:
    """Tokens/s and MFU of each engine, alternating order each round, equal seeds."""
    from dapo_rl.perf import batch_flops, mfu

    totals = {name: {"s": 0.0, "tokens": 0, "flops": 0, "steps": 0} for name in engines}
    for r in range(args.rounds + 1):  # round 0 warms up
        prompts = prompts_of(r)
        for name in list(engines)[:: 1 if r % 2 == 0 else -1]:
            ro, s = _sample(engines[name], prompts, args, seed=r)
            if r == 0:
                continue
            t = totals[name]
            t["s"] += s
            t["tokens"] += int(ro.lengths.sum())
            t["steps"] += ro.completion_ids.shape[1]
            lens = (ro.prompt_mask.sum(1).tolist(), ro.lengths.tolist())
            t["flops"] += batch_flops(shape, *lens, args.group)
    out = {}
    for name, t in totals.items():
        dtype = "float32" if name.startswith("float32") else "bfloat16"
        out[name] = {
            **t,
            "tokens_per_s": t["tokens"] / t["s"],
            "ms_per_decode_step": 1000 * t["s"] / t["steps"],
            "mfu": mfu(t["flops"], t["s"], peaks["mm_2048"][dtype]),
            "mfu_dtype": dtype,
        }
    return out


def _per_step_ms(engine, prompt: str, rows: int, tokens: int) -> float:
    """Milliseconds per decode step: ``tokens`` forced steps minus a 1-token run's prefill."""
    g = torch.Generator().manual_seed(0)
    eos, engine.eos_ids = engine.eos_ids, torch.tensor([-1])  # no row ends: ``tokens`` steps
    try:
        times = []
        for n in (1, tokens):
            t = time.perf_counter()
            engine.generate([prompt], n=rows, max_new_tokens=n, generator=g)
            times.append(time.perf_counter() - t)
    finally:
        engine.eos_ids = eos
    return 1000 * (times[1] - times[0]) / (tokens - 1)


def _update(models: dict, rollout, args, shape, peaks, rounds: int) -> dict:
    """``policy_update`` over one rollout per precision (``train/precision.py``),
    alternating; seconds and MFU."""
    from dapo_rl.config import build
    from dapo_rl.perf import TRAIN_FACTOR, batch_flops, mfu
    from dapo_rl.train.update import UpdateSettings, batched_logprobs, policy_update

    s = UpdateSettings.from_config(
        build(overrides={"rollout.group_size": args.group, "model.dtype": "float32"})
    )
    lens = (rollout.prompt_mask.sum(1).tolist(), rollout.lengths.tolist())
    flops = TRAIN_FACTOR * batch_flops(shape, *lens, args.group)
    adv = torch.randn(len(rollout), generator=torch.Generator().manual_seed(0))
    best = {name: float("inf") for name in models}
    for r in range(rounds + 1):
        for name in list(models)[:: 1 if r % 2 == 0 else -1]:
            compute, master = models[name].working, models[name].master
            # the run's optimizer (loop.build_state: fused AdamW); lr 0 keeps the weights
            opt = torch.optim.AdamW(master.parameters(), lr=0.0, fused=True)
            models[name].attach(opt)  # bf16: the working copy is refreshed after each step
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
            old = batched_logprobs(compute, rollout, s)
            t = time.perf_counter()
            policy_update(
                compute,
                opt,
                sched,
                rollout,
                adv=adv,
                old_logp=old,
                loss_mask=rollout.mask,
                ref_logp=None,
                s=s,
                generator=torch.Generator().manual_seed(0),
            )
            if r:
                best[name] = min(best[name], time.perf_counter() - t)
    return {
        name: {"s": sec, "mfu": mfu(flops, sec, peaks["mm_2048"][name]), "train_flops": flops}
        for name, sec in best.items()
    }


def _profile(engine, prompts, args) -> list[dict]:
    """The profiler's top operators (self CPU time) of one generation."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _sample(engine, prompts, args, seed=0)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    return [
        {
            "op": e.key,
            "calls": e.count,
            "self_ms": e.self_cpu_time_total / 1000,
            "share": e.self_cpu_time_total / total,
        }
        for e in rows[:15]
    ]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--prompts", type=int, default=4, help="prompts per batch (P)")
    p.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="timed rounds after one warm-up")
    p.add_argument("--threads", default="", help="comma-separated thread counts to compare")
    p.add_argument("--no-profile", action="store_true", help="skip the profiler pass")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bf16_speed.json"))
    args = p.parse_args()
    from transformers import AutoConfig  # noqa: F401  (imported before timing starts)

    from dapo_rl.data.arithmetic import Arithmetic
    from dapo_rl.data.templates import build_prompt
    from dapo_rl.models import load_model, load_tokenizer
    from dapo_rl.perf import ModelShape, matmul_peaks
    from dapo_rl.rollout import HFEngine
    from dapo_rl.train.precision import Precision

    started, load_before = time.perf_counter(), os.getloadavg()
    threads = torch.get_num_threads()
    peaks = _peaks()
    tok = load_tokenizer(args.model)
    model = load_model(args.model)
    shape = ModelShape.from_config(model.config)
    precision = Precision(model, torch.bfloat16)
    working = precision.working
    task = Arithmetic(1, 20, 2, "+")
    pool = task.held_out(0, args.prompts * (args.rounds + 1))

    def prompts_of(r):
        chunk = pool[r * args.prompts : (r + 1) * args.prompts]
        return [build_prompt(tok, ex.problem, "dapo_oneshot") for ex in chunk]

    engines = {  # "float32": the model's forward at every step, as before the lean step
        "float32": HFEngine(model, tok, lean=False),
        "float32_lean": HFEngine(model, tok),
        "bf16_working_copy": HFEngine(working, tok, lean=False),
        "bf16_lean": HFEngine(working, tok),
    }
    _say("sampling")
    sampling = _sampling(engines, prompts_of, args, shape, peaks)
    rollout, _ = _sample(engines["float32"], prompts_of(0), args, seed=0)
    _say("update")
    update = _update(
        {"float32": Precision(model), "bfloat16": precision}, rollout, args, shape, peaks, 1
    )
    _say("decode step overhead")
    steps = min(args.max_new_tokens, 16)
    overhead = {
        name: {
            f"batch_{rows}": _per_step_ms(engines[name], prompts_of(0)[0], rows, steps)
            for rows in (1, args.prompts * args.group)
        }
        for name in engines
    }
    per_threads = {}
    for n in [int(t) for t in args.threads.split(",") if t.strip()]:
        _say(f"{n} threads")
        torch.set_num_threads(n)
        per_threads[n] = {
            "mm_2048_gflops": {k: v / 1e9 for k, v in matmul_peaks().items()},
            "bf16_sampling": _sampling(
                {"bf16_lean": engines["bf16_lean"]}, prompts_of, args, shape, peaks
            )["bf16_lean"]["tokens_per_s"],
        }
    torch.set_num_threads(threads)
    profile = [] if args.no_profile else _profile(engines["bf16_lean"], prompts_of(0), args)
    summary = {
        "command": "python benchmarks/bf16_speed.py " + " ".join(sys.argv[1:]),
        "settings": vars(args) | {"torch_threads": threads},
        "versions": {"torch": torch.__version__},
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "harness_s": time.perf_counter() - started,
        "peaks_gflops": {k: {d: v / 1e9 for d, v in m.items()} for k, m in peaks.items()},
        "bf16_over_fp32_mm_peak": peaks["mm_2048"]["bfloat16"] / peaks["mm_2048"]["float32"],
        "sampling": sampling,
        "sampling_speedup_over_float32": {
            name: row["tokens_per_s"] / sampling["float32"]["tokens_per_s"]
            for name, row in sampling.items()
        },
        "update": update,
        "bf16_update_speedup": update["float32"]["s"] / update["bfloat16"]["s"],
        "decode_step_ms": overhead,
        "threads": per_threads,
        "bf16_generation_profile_top_ops": profile,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "bf16_generation_profile_top_ops"}))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
