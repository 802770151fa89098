"""The processes of benchmarks/trl_compare.py: one trainer (or the sampling test) each.

    python benchmarks/compare_workers.py ROLE SPEC_JSON RESULT_JSON

ROLE is ``ours`` (our ``train_step``, dynamic sampling and overlong shaping off), ``ours-defaults``
(the ``dapo`` defaults), ``ours-bf16`` (``ours`` with ``model.dtype=bfloat16`` and old
log-probs recomputed in bf16), ``trl`` (TRL's ``GRPOTrainer`` in float32, no gradient
checkpointing), ``trl-defaults`` (TRL in its own defaults: bf16 autocast and gradient
checkpointing) or ``generate`` (``HFEngine.generate`` against ``model.generate``, and with
``spec["bf16"]`` also ``HFEngine.generate`` from a bf16 working copy). Each runs one warm-up
step and ``steps`` timed steps and writes, per step, its wall time, the time and the prompt
and completion lengths of every generation, the update time and the trained batch's lengths,
and its own peak resident memory. Nothing is summarised here: the parent turns lengths into
tokens and FLOPs the same way for every role. Timing is from outside: our engine's ``generate``
and ``policy_update`` are wrapped; in TRL, ``_generate`` (tokenise, ``model.generate``, decode),
``_generate_and_score_completions`` (the whole rollout) and the no-gradient calls of
``_get_per_token_logps_and_entropies`` (the old-policy pass) are wrapped, and a callback stamps
each optimizer step.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

TEMPLATE = "dapo_oneshot"
TRL_REPORTED = (
    "use_cpu bf16 fp16 gradient_checkpointing per_device_train_batch_size "
    "gradient_accumulation_steps steps_per_generation generation_batch_size num_iterations "
    "num_generations max_completion_length temperature top_p top_k learning_rate "
    "lr_scheduler_type warmup_steps max_grad_norm loss_type epsilon epsilon_high beta "
    "scale_rewards mask_truncated_completions shuffle_dataset seed max_steps optim"
).split()


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# What the bf16 row adds to the like-for-like settings: bf16 compute, and the PPO ratio's old
# log-probs recomputed by the same bf16 forward as the update (issue 13, item 1).
BF16 = {"model.dtype": "bfloat16", "train.recompute_old_logprobs": True}


def _overrides(spec: dict, like_for_like: bool) -> dict:
    out = {
        "model.name": spec["model_dir"],
        "model.dtype": "float32",  # the like-for-like rows; ours-bf16 sets bfloat16
        "rollout.prompts_per_step": spec["prompts"],
        "rollout.group_size": spec["group"],
        "rollout.max_new_tokens": spec["max_new_tokens"],
        "train.mini_batches_per_step": spec["mini_batches"],
        "train.micro_batch_size": spec["prompts"] * spec["group"] // spec["mini_batches"],
        "train.lr": spec["lr"],
        "run.seed": spec["seed"],
        "run.threads": spec["threads"],
        "run.progress": False,
        "data.template": TEMPLATE,
    }
    if like_for_like:
        out.update({"algo.dynamic_sampling": False, "algo.overlong_shaping": False})
    out.update(spec.get("extra", {}))  # a variant's own keys (benchmarks/speed_changes.py)
    return out


def _lengths(prompt_mask, mask) -> dict:
    return {"prompt_lens": prompt_mask.sum(1).tolist(), "completion_lens": mask.sum(1).tolist()}


def run_ours(spec: dict, like_for_like: bool, extra: dict | None = None) -> dict:
    """Our train_step, with the engine's generate and the update timed from outside."""
    from dapo_rl.config import build
    from dapo_rl.train import loop
    from dapo_rl.train import step as step_module

    t0 = time.perf_counter()
    overrides = {**_overrides(spec, like_for_like), **(extra or {})}
    state = loop.build_state(build(overrides=overrides))
    load_s = time.perf_counter() - t0
    rec: dict = {}
    generate, update = state.engine.generate, step_module.policy_update

    def timed_generate(*a, **kw):
        t = time.perf_counter()
        ro = generate(*a, **kw)
        rec["gen"].append({"s": time.perf_counter() - t, **_lengths(ro.prompt_mask, ro.mask)})
        return ro

    def timed_update(model, optimizer, scheduler, batch, **kw):
        t = time.perf_counter()
        out = update(model, optimizer, scheduler, batch, **kw)
        rec["update_s"] = time.perf_counter() - t
        rec["train"] = _lengths(batch.prompt_mask, batch.mask)
        return out

    state.engine.generate, step_module.policy_update = timed_generate, timed_update
    steps = []
    for i in range(spec["steps"] + 1):
        rec.clear()
        rec.update(gen=[], update_s=0.0, old_logp_s=0.0, train=None)
        t = time.perf_counter()
        metrics = step_module.train_step(state)
        rec["wall"] = time.perf_counter() - t
        rec["old_logp_s"] = metrics.get("time/old_logprob", 0.0)
        steps.append(dict(rec))
        print(f"[ours] step {i}: {rec['wall']:.1f} s", file=sys.stderr, flush=True)
    import torch

    return {"steps": steps, "load_s": load_s, "threads": torch.get_num_threads()}


def _trl_config(spec: dict, output_dir: str, defaults: bool = False):
    from trl import GRPOConfig

    per_step = spec["prompts"] * spec["group"] // spec["mini_batches"]
    # GRPOConfig turns bf16 (autocast) and gradient checkpointing on by default: the
    # like-for-like row turns them off, the defaults row keeps them
    precision = (
        {}
        if defaults
        else {
            "bf16": False,
            "fp16": False,
            "gradient_checkpointing": False,
            "model_init_kwargs": {"dtype": "float32"},
        }
    )
    return GRPOConfig(
        output_dir=output_dir,
        use_cpu=True,
        **precision,
        per_device_train_batch_size=per_step,  # completions per optimizer step
        gradient_accumulation_steps=1,
        steps_per_generation=spec["mini_batches"],  # one generation feeds K optimizer steps
        num_iterations=1,
        num_generations=spec["group"],
        max_completion_length=spec["max_new_tokens"],
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=spec["lr"],
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=2,
        weight_decay=0.0,
        max_grad_norm=1.0,
        loss_type="dapo",
        epsilon=0.2,
        epsilon_high=0.28,
        beta=0.0,
        scale_rewards="group",
        mask_truncated_completions=False,
        shuffle_dataset=False,  # prompts in stream order, as our trainer reads them
        seed=spec["seed"],
        max_steps=spec["mini_batches"] * (spec["steps"] + 1),
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def run_trl(spec: dict, defaults: bool = False) -> dict:
    """TRL's GRPOTrainer on the same prompts; generation, scoring and steps timed by wrapping."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from dapo_rl.config import build
    from dapo_rl.data.templates import build_prompt, render
    from dapo_rl.models import load_tokenizer
    from dapo_rl.rewards import get_verifier, score_all
    from dapo_rl.train import loop

    torch.set_num_threads(spec["threads"])
    P, G, K = spec["prompts"], spec["group"], spec["mini_batches"]
    cfg = build(overrides=_overrides(spec, True))
    stream, _, _ = loop._datasets(cfg)  # the run's own stream: same problems, same order
    examples = stream.next(P * (spec["steps"] + 1))
    data = Dataset.from_list(
        [{"prompt": render(ex.problem, TEMPLATE), "answer": ex.answer} for ex in examples]
    )
    verifier = get_verifier("dapo_answer")

    def dapo_answer_reward(completions, answer, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        verdicts, _ = score_all(verifier, texts, list(answer), timeout=cfg.rewards.timeout)
        return [v.score for v in verdicts]

    tok = load_tokenizer(spec["model_dir"])
    expected = [
        tok(build_prompt(tok, ex.problem, TEMPLATE), add_special_tokens=False)["input_ids"]
        for ex in examples
        for _ in range(G)
    ]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = GRPOTrainer(
            model=spec["model_dir"],
            reward_funcs=dapo_answer_reward,
            args=_trl_config(spec, out_dir, defaults),
            train_dataset=data,
        )
        load_s = time.perf_counter() - t0
        gens, rollouts, old_logp, begins, ends = [], [], [], [], []
        generate = trainer._generate
        score = trainer._generate_and_score_completions
        logps = trainer._get_per_token_logps_and_entropies

        def timed_generate(prompts):
            t = time.perf_counter()
            out = generate(prompts)
            prompt_ids, completion_ids = out[0], out[1]
            first = len(gens) * P * G
            gens.append(
                {
                    "s": time.perf_counter() - t,
                    "prompt_lens": [len(p) for p in prompt_ids],
                    "completion_lens": [len(c) for c in completion_ids],
                    "prompts_match": [list(p) for p in prompt_ids]
                    == expected[first : first + len(prompt_ids)],
                }
            )
            return out

        def timed_score(inputs):
            t = time.perf_counter()
            out = score(inputs)
            rollouts.append(time.perf_counter() - t)
            return out

        def timed_logps(*a, **kw):
            t = time.perf_counter()
            out = logps(*a, **kw)
            if not torch.is_grad_enabled():  # the old-policy pass inside the rollout
                old_logp.append((len(gens), time.perf_counter() - t))
            return out

        class StepClock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                begins.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kw):
                ends.append(time.perf_counter())
                if len(ends) % K == 0:
                    n = len(ends) // K - 1
                    wall = ends[-1] - begins[-K]
                    print(f"[trl] step {n}: {wall:.1f} s", file=sys.stderr, flush=True)

        trainer._generate = timed_generate
        trainer._generate_and_score_completions = timed_score
        trainer._get_per_token_logps_and_entropies = timed_logps
        trainer.add_callback(StepClock())
        trainer.train()
        used = {k: v for k, v in trainer.args.to_dict().items() if k in TRL_REPORTED}
    steps = []
    for i in range(spec["steps"] + 1):
        wall = ends[K * i + K - 1] - begins[K * i]
        g = gens[i]
        steps.append(
            {
                "wall": wall,
                "gen": [g],
                "update_s": wall - rollouts[i],  # K optimizer steps, minus the rollout
                "old_logp_s": sum(s for n, s in old_logp if n == i + 1),
                "train": {k: g[k] for k in ("prompt_lens", "completion_lens")},
                "rollout_s": rollouts[i],
            }
        )
    return {
        "steps": steps,
        "load_s": load_s,
        "threads": torch.get_num_threads(),
        "prompts_match": all(g["prompts_match"] for g in gens),
        "trl_config": used,
    }


def run_generate(spec: dict) -> dict:
    """Sampling alone: HFEngine.generate and model.generate on the same prompts, alternating."""
    import torch
    from transformers import GenerationConfig

    from dapo_rl.config import build
    from dapo_rl.data.templates import build_prompt
    from dapo_rl.models import load_model, load_tokenizer
    from dapo_rl.rollout import HFEngine
    from dapo_rl.train import loop

    torch.set_num_threads(spec["threads"])
    P, G, T = spec["prompts"], spec["group"], spec["max_new_tokens"]
    tok = load_tokenizer(spec["model_dir"])
    model = load_model(spec["model_dir"]).eval()
    engine = HFEngine(model, tok)
    stream, _, _ = loop._datasets(build(overrides=_overrides(spec, True)))
    hf_config = GenerationConfig(
        max_new_tokens=T,
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        pad_token_id=engine.pad_id,
        eos_token_id=engine.eos_id,
    )
    generator = torch.Generator().manual_seed(spec["seed"])
    torch.manual_seed(spec["seed"])

    def ours(prompts, engine=engine, generator=generator):
        ro = engine.generate(prompts, n=G, max_new_tokens=T, temperature=1.0, generator=generator)
        return [ids[m.bool()].tolist() for ids, m in zip(ro.completion_ids, ro.mask, strict=True)]

    def hf(prompts):
        ids, mask = engine.encode(prompts)
        ids, mask = ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=hf_config)
        rows = out[:, ids.shape[1] :].tolist()
        eos = engine.eos_id  # completion tokens up to and with the first EOS
        return [r[: r.index(eos) + 1] if eos in r else r for r in rows]

    samplers = {"ours": ours, "hf": hf}
    if spec.get("bf16"):  # the engine a bf16 run samples with: its bf16 working copy
        from dapo_rl.train.precision import Precision

        bf16 = HFEngine(Precision(model, torch.bfloat16).working, tok)
        own = torch.Generator().manual_seed(spec["seed"])  # leaves the others' streams alone
        samplers["ours_bf16"] = lambda prompts: ours(prompts, bf16, own)

    rounds = []
    for r in range(spec["gen_rounds"] + 1):
        prompts = [build_prompt(tok, ex.problem, TEMPLATE) for ex in stream.next(P)]
        row, drawn = {}, {}
        for name in list(samplers)[:: 1 if r % 2 == 0 else -1]:  # alternating order
            t = time.perf_counter()
            drawn[name] = samplers[name](prompts)
            lengths = [len(x) for x in drawn[name]]
            row[name] = {
                "s": time.perf_counter() - t,
                "tokens": sum(lengths),
                "longest": max(lengths),
            }
        # both draw with an exponential race from equally seeded streams: the same tokens until
        # the first row ends (then HFEngine draws noise for fewer rows and the streams part)
        pairs = zip(drawn["ours"], drawn["hf"], strict=True)
        row["same_completions"] = sum(a == b for a, b in pairs)
        row["completions"] = len(drawn["ours"])
        rounds.append(row)
    return {"rounds": rounds[1:], "warmup": rounds[0], "threads": torch.get_num_threads()}


def main(role: str, spec_json: str, result: str) -> int:
    spec = json.loads(spec_json)
    import torch

    torch.set_num_threads(spec["threads"])
    match role:
        case "ours":
            out = run_ours(spec, like_for_like=True)
        case "ours-defaults":
            out = run_ours(spec, like_for_like=False)
        case "ours-bf16":
            out = run_ours(spec, like_for_like=True, extra=BF16)
        case "trl":
            out = run_trl(spec)
        case "trl-defaults":
            out = run_trl(spec, defaults=True)
        case "generate":
            out = run_generate(spec)
        case _:
            raise SystemExit(f"unknown role {role}")
    out["peak_rss_mib"] = _peak_rss_mib()
    Path(result).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
