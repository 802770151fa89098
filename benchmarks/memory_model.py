"""The memory model on paper for DAPO's settings, and one update's memory measured on the CPU.

    python benchmarks/memory_model.py table      # per-GPU bytes: Qwen2.5-1.5B/7B/32B
    python benchmarks/memory_model.py measure    # CPU: checkpointing and chunking on/off
    python benchmarks/memory_model.py measure --layers 24 --rows 4 --completion 448  # heavier

``table`` evaluates ``dapo_rl.memory.estimate`` for Qwen2.5-1.5B, 7B and 32B (their
published shapes; no weights are read) at DAPO's recipe: 512 prompts x 16 completions, prompts
of up to 2048 and completions of up to 20480 tokens, one full-length sequence per micro-batch
(``train.max_tokens_per_micro_batch=22528``), bf16 compute with float32 master weights and
AdamW state, FSDP over 8 GPUs (one node) and over 32 and 64 (4 and 8 nodes). Saved to
``benchmarks/results/memory_model.json``.

``measure`` runs one update (one AdamW step of one micro-batch: by default 2 sequences of
64 + 448 tokens) of a random model of Qwen2.5-0.5B's shape (width 896, 14 heads, 2 KV
heads, MLP 4864; 4 of its 24 layers by default, to fit a small shared machine) with the
SmolLM2 tokenizer's vocabulary, in a fresh process per setting, with activation
checkpointing and chunked log-probs (chunks of ``--chunk`` positions) each on and off. It
records the peak resident memory (Linux ``VmHWM``, reset just before the update) and the peak
of live tensor bytes (``memory.PeakTensorBytes``) of the forward and backward passes (read
just before the optimizer step) and of the whole update, and the formula's terms. Saved to
``benchmarks/results/memory_update_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
# Qwen2.5 shapes (config.json of the released models)
QWEN = {
    "Qwen2.5-1.5B": dict(hidden=1536, layers=28, heads=12, kv=2, mlp=8960, vocab=151936, tied=1),
    "Qwen2.5-7B": dict(hidden=3584, layers=28, heads=28, kv=4, mlp=18944, vocab=152064, tied=0),
    "Qwen2.5-32B": dict(hidden=5120, layers=64, heads=40, kv=8, mlp=27648, vocab=152064, tied=0),
}
PROMPT, RESPONSE = 2048, 20480  # DAPO: max prompt and response lengths
CHUNK = 2048  # train.logits_chunk default


def _config(hidden, layers, heads, kv, mlp, vocab, tied):
    from transformers import Qwen2Config

    return Qwen2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=mlp,
        vocab_size=vocab,
        tie_word_embeddings=bool(tied),
    )


def table() -> dict:
    from dapo_rl.memory import Layout, Shape, estimate

    rows = []
    for name, spec in QWEN.items():
        shape = Shape.from_config(_config(**spec))
        for world in (8, 32, 64):
            base = dict(
                world=world,
                fsdp=True,
                compute_dtype="bfloat16",
                micro_batch_tokens=PROMPT + RESPONSE,
                logits_positions=RESPONSE,
            )
            plain = estimate(shape, Layout(**base))
            bounded = estimate(shape, Layout(**base, grad_checkpointing=True, logits_chunk=CHUNK))
            kv = estimate(shape, Layout(**base, kv_tokens=PROMPT + RESPONSE))["kv_cache"]
            rows.append(
                {
                    "model": name,
                    "params": shape.params,
                    "gpus": world,
                    "weights": plain["weights"],
                    "gradients": plain["gradients"],
                    "optimizer": plain["optimizer"],
                    "gathered": plain["gathered"],
                    "activations": plain["activations"],
                    "activations_checkpointed": bounded["activations"],
                    "logits": plain["logits"],
                    "logits_chunked": bounded["logits"],
                    "total": plain["total"],
                    "total_checkpointed_chunked": bounded["total"],
                    "kv_cache_per_sequence": kv,
                }
            )
    return {"settings": {"prompt": PROMPT, "response": RESPONSE, "chunk": CHUNK}, "rows": rows}


def markdown(result: dict) -> str:
    head = (
        "| model | GPUs | weights | grads | AdamW | gathered | act. | act. ckpt | logits "
        "| logits chunked | total | total ckpt+chunk | KV / sequence |"
    )
    lines = [head, "|" + "---|" * 13]
    keys = (
        "weights gradients optimizer gathered activations activations_checkpointed logits "
        "logits_chunked total total_checkpointed_chunked kv_cache_per_sequence"
    ).split()
    for r in result["rows"]:
        cells = [f"{r[k] / GB:.1f}" for k in keys]
        lines.append(f"| {r['model']} | {r['gpus']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _child(spec: dict) -> dict:
    """One update in this process; the memory it took."""
    import torch

    from dapo_rl.memory import Layout, PeakTensorBytes, Shape, estimate
    from dapo_rl.models import enable_grad_checkpointing, load_tokenizer
    from dapo_rl.rollout import Rollout
    from dapo_rl.train.update import UpdateSettings, policy_update

    torch.set_num_threads(spec["threads"])
    vocab = len(load_tokenizer("tiny-random"))  # the SmolLM2 tokenizer
    config = _config(896, spec["layers"], 14, 2, 4864, vocab, 1)
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.config.use_cache = False
    if spec["ckpt"]:
        enable_grad_checkpointing(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    b, tp, tc = spec["rows"], spec["prompt"], spec["completion"]
    g = torch.Generator().manual_seed(0)
    n = b
    ro = Rollout(
        torch.randint(1, vocab, (n, tp), generator=g),
        torch.ones(n, tp, dtype=torch.long),
        torch.randint(1, vocab, (n, tc), generator=g),
        torch.ones(n, tc, dtype=torch.long),
        torch.zeros(n, tc),
        torch.full((n,), tc),
        torch.zeros(n, dtype=torch.bool),
    )
    s = UpdateSettings(
        eps_low=0.2,
        eps_high=0.28,
        dual_clip=None,
        loss_agg="token_mean",
        norm_len=tc,
        kl_coef=0.0,
        kl_kind="k3",
        temperature=1.0,
        mini_batches=1,
        micro_batch_size=b,
        max_grad_norm=1.0,
        share_prompt=False,
        logits_chunk=spec["chunk"],
    )
    passes = {}
    step = opt.step

    def step_after_passes(*a, **kw):  # the peaks of forward + backward, before the step
        passes.update(peak_rss=_status("VmHWM"), peak_tensor_bytes=tracker.peak)
        return step(*a, **kw)

    opt.step = step_after_passes
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (VmHWM)
    rss0 = _status("VmRSS")
    with PeakTensorBytes() as tracker:
        tracker.count(model.parameters())
        policy_update(
            model,
            opt,
            sched,
            ro,
            adv=torch.randn(n, generator=g),
            old_logp=torch.full((n, tc), -8.0),
            loss_mask=ro.mask,
            ref_logp=None,
            s=s,
            generator=torch.Generator().manual_seed(0),
        )
    layout = Layout(
        micro_batch_tokens=b * (tp + tc),
        logits_positions=b * tc,
        logits_chunk=spec["chunk"],
        grad_checkpointing=spec["ckpt"],
    )
    return {
        **spec,
        "params": sum(p.numel() for p in model.parameters()),
        "rss_before_update": rss0,
        "forward_backward": passes,
        "update": {"peak_rss": _status("VmHWM"), "peak_tensor_bytes": tracker.peak},
        "estimate": estimate(Shape.from_config(config), layout),
    }


def _status(key: str) -> int:
    """A memory line of this process's /proc status in bytes: VmRSS (now), VmHWM (peak
    since the last reset)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(x.split()[1]) * 1024 for x in status if x.startswith(key + ":"))


def measure(args) -> dict:
    runs = []
    for ckpt in (False, True):
        for chunk in (0, args.chunk):
            spec = dict(
                layers=args.layers,
                rows=args.rows,
                prompt=args.prompt,
                completion=args.completion,
                threads=args.threads,
                ckpt=ckpt,
                chunk=chunk,
            )
            cmd = ["nice", sys.executable, __file__, "_child", json.dumps(spec)]
            # glibc's adaptive mmap threshold keeps freed large blocks resident, so RSS would
            # show the most memory ever allocated rather than what is alive: a fixed threshold
            # returns every block of 64 KiB or more to the system when freed
            env = dict(os.environ)
            if args.mmap_threshold > 0:  # 0: glibc's adaptive default
                env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = runs[-1]
            fb, up = r["forward_backward"], r["update"]
            print(
                f"ckpt={ckpt} chunk={chunk}: forward+backward peak RSS "
                f"{fb['peak_rss'] / GB:.2f} GB, live tensors {fb['peak_tensor_bytes'] / GB:.2f} "
                f"GB; whole update {up['peak_rss'] / GB:.2f} / {up['peak_tensor_bytes'] / GB:.2f}"
                f" GB; formula {r['estimate']['total'] / GB:.2f} GB",
                flush=True,
            )
    by = {(r["ckpt"], r["chunk"]): r for r in runs}
    plain = by[False, 0]
    saving = {
        name: {
            f"{part}_{key}": plain[part][key] - by[k][part][key]
            for part in ("forward_backward", "update")
            for key in ("peak_rss", "peak_tensor_bytes")
        }
        | {"estimate": plain["estimate"]["total"] - by[k]["estimate"]["total"]}
        for name, k in (
            ("chunked_logprobs", (False, args.chunk)),
            ("grad_checkpointing", (True, 0)),
            ("both", (True, args.chunk)),
        )
    }
    return {
        "command": " ".join(sys.argv),
        "malloc_mmap_threshold": args.mmap_threshold,
        "runs": runs,
        "saving_vs_plain": saving,
    }


def main() -> int:
    if sys.argv[1:2] == ["_child"]:
        print(json.dumps(_child(json.loads(sys.argv[2]))))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["table", "measure"])
    p.add_argument("--layers", type=int, default=4, help="decoder layers (Qwen2.5-0.5B: 24)")
    p.add_argument("--rows", type=int, default=2, help="sequences per micro-batch")
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--completion", type=int, default=448)
    p.add_argument("--chunk", type=int, default=128, help="train.logits_chunk when on")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--mmap-threshold",
        type=int,
        default=65536,
        help="MALLOC_MMAP_THRESHOLD_ (0: glibc's default)",
    )
    args = p.parse_args()
    results = ROOT / "benchmarks" / "results"
    if args.what == "table":
        result = table()
        (results / "memory_model.json").write_text(json.dumps(result, indent=1))
        print(markdown(result))
    else:
        result = measure(args)
        (results / "memory_update_cpu.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result["saving_vs_plain"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
