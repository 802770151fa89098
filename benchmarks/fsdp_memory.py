"""Does FSDP2 shard the memory? Peak RSS of one update: one process vs FSDP over gloo ranks.

    nice python benchmarks/fsdp_memory.py                 # 24 layers, 2 ranks: ~10 min on 2 cores
    nice python benchmarks/fsdp_memory.py --layers 12 \\
        --out benchmarks/results/fsdp_memory_12layers.json
    python benchmarks/fsdp_memory.py --layers 4 --out /tmp/m.json   # a quick look

The model is a random Qwen2.5-0.5B-shaped Qwen2 (width 896, 14 heads, 2 KV heads, MLP 4864,
tied head) with the SmolLM2 tokenizer's vocabulary, built in-process. Each configuration
runs in fresh processes that build the model, take one ``policy_update`` (AdamW, one
optimizer step) on a fixed synthetic rollout, and report ``ru_maxrss``: the process's
peak resident memory, model building included. One process takes the whole rollout; each
of the ``--ranks`` gloo ranks (``torchrun``, ``train.fsdp``: ``dist.shard_model``) takes
its share. With perfect sharding of weights, gradients and AdamW state (16 bytes per
parameter) the largest rank needs about 1/ranks of that plus what is not sharded (the
runtime, one gathered layer, activations). Saved to
``benchmarks/results/fsdp_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUP = 4


def _model(layers: int):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from dapo_rl.models import load_tokenizer

    tok = load_tokenizer("tiny-random")  # SmolLM2's tokenizer: 49,152 tokens
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=layers,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.config.use_cache = False
    return model


def _rollout(groups: int, prompt: int, completion: int):
    import torch

    from dapo_rl.rollout import Rollout

    g = torch.Generator().manual_seed(0)
    rows = groups * GROUP
    prompts = torch.randint(10, 40000, (groups, prompt), generator=g).repeat_interleave(GROUP, 0)
    ids = torch.randint(10, 40000, (rows, completion), generator=g)
    ones = torch.ones(rows, completion, dtype=torch.long)
    return Rollout(
        prompts,
        torch.ones_like(prompts),
        ids,
        ones,
        torch.zeros(rows, completion),
        torch.full((rows,), completion),
        torch.zeros(rows, dtype=torch.bool),
    )


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(args) -> None:
    import torch

    from dapo_rl import dist
    from dapo_rl.train.update import UpdateSettings, policy_update

    torch.set_num_threads(1)
    dist.init_from_env()
    model = _model(args.layers)
    params = sum(p.numel() for p in model.parameters())
    if args.fsdp:
        dist.shard_model(model, bf16=args.bf16)
    built = _peak_mib()
    batch = _rollout(args.groups, args.prompt, args.completion)
    start, stop = dist.share_bounds(args.groups, dist.rank(), dist.world_size())
    mine = batch.select(slice(start * GROUP, stop * GROUP))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    s = UpdateSettings(
        eps_low=0.2,
        eps_high=0.28,
        dual_clip=None,
        loss_agg="token_mean",
        norm_len=args.completion,
        kl_coef=0.0,
        kl_kind="k3",
        temperature=1.0,
        mini_batches=1,
        micro_batch_size=GROUP,
        max_grad_norm=1.0,
        group_size=GROUP,
    )
    adv = torch.randn(len(mine), generator=torch.Generator().manual_seed(1))
    old = torch.zeros(mine.logp.shape)
    policy_update(
        model, opt, sched, mine, adv=adv, old_logp=old, loss_mask=mine.mask, ref_logp=None,
        s=s, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    out = {"rank": dist.rank(), "params": params, "peak_rss_mib": _peak_mib()}
    out["peak_rss_mib_after_build"] = built
    Path(f"{args.out}{dist.rank()}" if args.fsdp else args.out).write_text(json.dumps(out))
    if dist.initialized():
        torch.distributed.destroy_process_group()


def _run(cmd: list[str], ranks: int, mmap_threshold: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if mmap_threshold:  # glibc: blocks this large are returned to the OS when freed
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    if ranks > 1:
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd = [*run, f"--nproc_per_node={ranks}", *cmd]
    else:
        cmd = [sys.executable, *cmd]
    subprocess.run(cmd, env=env, check=True)


def _measure(args, tmp: Path) -> tuple[dict, list[dict]]:
    shape = [f"--layers={args.layers}", f"--groups={args.groups}", f"--prompt={args.prompt}"]
    shape += [f"--completion={args.completion}"] + (["--bf16"] if args.bf16 else [])
    me = str(Path(__file__).resolve())
    _run([me, "--worker=1", f"--out={tmp / 'single.json'}", *shape], 1, args.mmap_threshold)
    _run([me, "--worker=1", "--fsdp", f"--out={tmp}/rank", *shape], args.ranks, args.mmap_threshold)
    single = json.loads((tmp / "single.json").read_text())
    return single, [json.loads(Path(f"{tmp}/rank{r}").read_text()) for r in range(args.ranks)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--groups", type=int, default=4, help="groups of 4 completions, all ranks")
    p.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    p.add_argument("--completion", type=int, default=32, help="completion tokens")
    p.add_argument("--bf16", action="store_true", help="FSDP MixedPrecisionPolicy (bf16)")
    p.add_argument(
        "--mmap-threshold",
        type=int,
        default=1 << 20,
        help="MALLOC_MMAP_THRESHOLD_ for both runs (0: glibc's default, whose dynamic "
        "threshold keeps freed mid-size tensors resident, so RSS sums transients)",
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fsdp_memory.json"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--fsdp", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        single, ranks = _measure(args, Path(tmp))
    largest = max(r["peak_rss_mib"] for r in ranks)
    result = {
        "command": " ".join(["python", *sys.argv]),
        "model": f"Qwen2 width 896, {args.layers} layers, vocab 49152, tied head",
        "params": single["params"],
        "rollout": {
            "groups": args.groups,
            "group_size": GROUP,
            "prompt": args.prompt,
            "completion": args.completion,
        },
        "single_process_peak_rss_mib": single["peak_rss_mib"],
        "fsdp_rank_peak_rss_mib": [r["peak_rss_mib"] for r in ranks],
        "fsdp_rank_peak_rss_mib_after_build": [r["peak_rss_mib_after_build"] for r in ranks],
        "largest_rank_over_single": largest / single["peak_rss_mib"],
        "mmap_threshold": args.mmap_threshold,
        "note": "2-core machine shared with other jobs; peak RSS includes building the model",
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
