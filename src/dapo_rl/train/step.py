"""One training step, written as the algorithm (DESIGN.md steps 1-8).

``collect`` does steps 1-5: take prompts, sample G completions each, score them, shape
rewards for length (DAPO 3.4), and - with dynamic sampling (DAPO 3.2) - drop groups whose
raw accuracy is all-equal and refill from the stream until ``prompts_per_step`` informative
groups are in hand or the round cap is reached (then it trains on what it has and warns).
What it remembers between steps lives in ``train/picker.py``: groups carried over from the
last step are used first, and prompts predicted to give a zero-variance group may be
passed over before sampling (``algo.carry_over``, ``algo.predictive_skip``).
``train_step`` adds steps 6-8: group advantages, old log-probs, and the clipped update.

Data parallel (``dapo_rl.dist``): every rank reads the same prompts from the stream (so its
position is the same everywhere) and samples its own contiguous share, in whole groups. The
refill loop counts kept groups over all ranks, so every rank stops in the same round; the
kept groups are then pooled and dealt out again in equal contiguous shares, and the
rollout statistics are gathered once per step. The prompt picker is fed the pooled outcomes
and the pooled surplus, so its state (and the prompts it passes over) is the same on every rank.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import torch

from dapo_rl import dist
from dapo_rl.algo import group_advantages, keep_groups, overlong_penalty, truncation_mask
from dapo_rl.data.templates import build_prompt
from dapo_rl.rewards import references, score_all
from dapo_rl.rollout import Rollout, concat_rollouts
from dapo_rl.samples import SAMPLES_PER_STEP, sample_records
from dapo_rl.train.update import batched_logprobs, policy_update


@dataclass(frozen=True)
class CollectStats:
    """What one step's sampling saw and cost, over every rank (counts summed, times maxed)."""

    rounds: int  # generation rounds (the refill loop's iterations)
    groups: int  # groups sampled, kept or not
    all_correct: int  # groups whose completions were all correct (acc)
    all_wrong: int  # groups whose completions were all wrong (acc)
    equal_acc: int  # groups of equal acc (= all_correct + all_wrong)
    equal_score: int  # groups of equal verifier score (before overlong shaping)
    kept_groups: int  # groups trained on (carried ones included)
    trained_equal_acc: int  # groups trained on whose acc is all equal (none with DS)
    gen_tokens: int  # completion tokens generated
    gen_time: float  # seconds in generation
    reward_time: float  # seconds in verification and shaping
    timeout: int  # verifier calls that timed out
    error: int  # verifier calls that raised
    nonfinite: int  # verifier calls that returned a non-finite score
    rewards: torch.Tensor  # (M,) shaped reward of every completion generated
    scores: torch.Tensor  # (M,) verifier score before shaping
    accs: torch.Tensor  # (M,) raw correctness
    lengths: torch.Tensor  # (M,) completion lengths, float
    truncated: torch.Tensor  # (M,) 1.0 where the completion has no EOS
    picker: dict[str, float]  # the prompt picker's ds/ metrics (pooled: not reduced again)


@dataclass
class Collected:
    """Kept groups (contiguous, G rows each) and what it cost to find them."""

    batch: Rollout | None
    rewards: torch.Tensor  # (N,) shaped rewards of kept completions
    acc: torch.Tensor  # (N,) raw correctness of kept completions
    stats: CollectStats


def _zero_var_split(acc: torch.Tensor, group_size: int) -> tuple[int, int]:
    groups = acc.view(-1, group_size).bool()
    return int(groups.all(1).sum()), int((~groups).all(1).sum())


def _equal_groups(values: torch.Tensor, group_size: int) -> int:
    """Groups whose ``values`` are all equal (what dynamic sampling would drop)."""
    return int((~keep_groups(values, group_size)).sum())


def _request(missing: int, state) -> int:
    """Prompts to sample for ``missing`` groups: with oversampling, missing / pass rate.

    The pass rate (share of groups that survive the filter) is that of the previous step;
    the request is capped at ``rollout.batch_size`` sequences per round.
    """
    cfg = state.cfg
    if not (cfg.algo.dynamic_sampling and cfg.algo.oversample):
        return missing
    cap = max(missing, cfg.rollout.batch_size // cfg.rollout.group_size)
    return min(cap, math.ceil(missing / max(state.picker.pass_rate, 0.1)))


def _share(batch: Rollout | None, rewards, accs, group_size: int):
    """This rank's contiguous share of the step's groups (all of them in a world of 1).

    With fewer groups than ranks no rank trains (the same decision on every rank).
    """
    world = dist.world_size()
    if batch is None or world == 1:
        return batch, rewards, accs
    n = len(batch) // group_size
    if n < world:
        warnings.warn(f"{n} informative groups for {world} ranks: no update", stacklevel=3)
        return None, rewards[:0], accs[:0]
    start, stop = dist.share_bounds(n, dist.rank(), world)
    rows = slice(start * group_size, stop * group_size)
    return batch.select(rows), rewards[rows], accs[rows]


def _sample_round(state, examples: list, st: dict, seen: dict):
    """Steps 2-4 for one round: G completions per prompt, verified, shaped for length.

    Adds the round's costs and statistics to ``st`` and ``seen``; returns
    (rollout, shaped rewards (N,), raw accuracy (N,), verifier score before shaping (N,)).
    """
    cfg, a, G = state.cfg, state.cfg.algo, state.cfg.rollout.group_size
    prompts = [build_prompt(state.tokenizer, ex, cfg.data.template) for ex in examples]
    t0 = time.perf_counter()
    ro = state.engine.generate(  # 2. G completions per prompt
        prompts,
        n=G,
        max_new_tokens=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        generator=dist.rank_generator(state.generator),
    )
    t1 = time.perf_counter()
    texts = state.tokenizer.batch_decode(
        [ids[m.bool()] for ids, m in zip(ro.completion_ids, ro.mask, strict=True)],
        skip_special_tokens=True,
    )
    refs = references(examples, G)  # the answers, carrying their rows for user rewards
    verdicts, faults = score_all(
        state.verifier, texts, refs, timeout=cfg.rewards.timeout
    )  # 3. verify
    for k, v in faults.items():
        st[k] += v
    score = torch.tensor([v.score for v in verdicts], dtype=torch.float32)
    acc = torch.tensor([v.acc for v in verdicts], dtype=torch.float32)
    reward = score.clone()
    if a.overlong_shaping:  # 4. DAPO 3.4 soft overlong punishment
        reward += overlong_penalty(
            ro.lengths,
            max_new_tokens=cfg.rollout.max_new_tokens,
            buffer=a.overlong_buffer,
            penalty=a.overlong_penalty,
        )
    if not getattr(state, "samples", True):  # a few to read, from the step's first round
        pairs = list(zip(reward.tolist(), acc.tolist(), strict=True))
        state.samples = sample_records(examples, texts, pairs, ro, SAMPLES_PER_STEP, G)
    st["reward_time"] += time.perf_counter() - t1
    st["gen_time"] += t1 - t0
    st["gen_tokens"] += int(ro.lengths.sum())
    st["groups"] += len(examples)
    c, w = _zero_var_split(acc, G)
    st["all_correct"] += c
    st["all_wrong"] += w
    st["equal_acc"] += _equal_groups(acc, G)
    st["equal_score"] += _equal_groups(score, G)
    for key, val in zip(
        seen, (reward, score, acc, ro.lengths.float(), ro.truncated.float()), strict=True
    ):
        seen[key].append(val)
    return ro, reward, acc, score


def _assemble(kept: list, rows: int, extra: int, pad_id: int):
    """Concatenate kept (rollout, reward, acc) parts and cut them after ``rows`` rows.

    Returns (batch, rewards, accs) of the first ``rows`` rows (None and empty tensors when
    nothing was kept) and a copy of up to ``extra`` rows after them, as a list of one part
    (empty when there are none); a copy, so a carried part does not hold the whole batch.
    """
    if not kept:
        return None, torch.zeros(0), torch.zeros(0), []
    batch = concat_rollouts([k[0] for k in kept], pad_id)
    rewards, accs = torch.cat([k[1] for k in kept]), torch.cat([k[2] for k in kept])
    idx = torch.arange(rows, max(rows, min(len(batch), rows + extra)))
    rest = [(batch.select(idx), rewards[idx], accs[idx])] if len(idx) else []
    if len(batch) > rows:
        batch, rewards, accs = batch.select(slice(0, rows)), rewards[:rows], accs[:rows]
    return batch, rewards, accs, rest


def collect(state) -> Collected:
    """Steps 1-5: sample, score, shape, filter and refill; carried groups come first."""
    cfg, G, picker = state.cfg, state.cfg.rollout.group_size, state.picker
    want, a = cfg.rollout.prompts_per_step, cfg.algo
    carried, n_carried = picker.begin_step()  # kept beyond the last step's need
    kept: list[tuple[Rollout, torch.Tensor, torch.Tensor]] = []
    outcomes: list[tuple[str, float]] = []  # (problem, group mean accuracy) of this rank
    seen = {"rewards": [], "scores": [], "accs": [], "lengths": [], "truncated": []}
    st = dict.fromkeys(("rounds", "groups", "all_correct", "all_wrong", "gen_tokens"), 0)
    st |= {"equal_acc": 0, "equal_score": 0}
    st |= {"gen_time": 0.0, "reward_time": 0.0, "timeout": 0, "error": 0, "nonfinite": 0}
    n_kept = n_carried
    while n_kept < want and st["rounds"] < (a.max_gen_rounds if a.dynamic_sampling else 1):
        st["rounds"] += 1
        # 1. prompts, minus those predicted uninformative: every rank reads the same request
        # and samples its own share of it
        request = picker.draw(state.stream, dist.round_up(_request(want - n_kept, state)))
        examples = dist.shard(request)
        ro, reward, acc, score = _sample_round(state, examples, st, seen)  # 2-4
        group_acc = acc.view(-1, G).mean(1).tolist()
        outcomes += zip([ex.problem for ex in examples], group_acc, strict=True)
        # 5. DAPO 3.2 dynamic sampling: keep groups whose raw accuracy (or, for partial
        # credit, whose verifier score before shaping) varies
        keep = (
            keep_groups(score if a.filter_metric == "score" else acc, G)
            if a.dynamic_sampling
            else torch.ones(len(examples), dtype=torch.bool)
        )
        rows = keep.repeat_interleave(G).nonzero()[:, 0]
        if len(rows):
            kept.append((ro.select(rows), reward[rows], acc[rows]))
        n_kept += dist.all_reduce(int(keep.sum()))  # over all ranks: they stop together
    if n_kept < want:
        warnings.warn(
            f"dynamic sampling found {n_kept}/{want} informative groups in "
            f"{st['rounds']} rounds (algo.max_gen_rounds); training on what it has",
            stacklevel=2,
        )
    # carried groups first, then every rank's kept groups in rank order: the same everywhere;
    # informative groups beyond the step's need are carried to the next, up to the cap
    n_carry = min(max(n_kept - want, 0), picker.s.carry_cap)
    parts = carried + dist.pool(kept)
    batch, rewards, accs, carry = _assemble(parts, want * G, n_carry * G, state.engine.pad_id)
    picker.end_step(dist.pool(outcomes), carry, n_carry)
    trained_equal = _equal_groups(accs, G) if len(accs) else 0  # the whole batch, every rank
    batch, rewards, accs = _share(batch, rewards, accs, G)
    st.update({k: torch.cat(v) for k, v in seen.items()})
    st = dist.reduce_stats(st, max_keys=("rounds", "gen_time", "reward_time"))
    if a.dynamic_sampling:  # pass-through rate seen by the next step's requests
        picker.pass_rate = (n_kept - n_carried) / max(st["groups"], 1)
    stats = CollectStats(
        **{k: st.pop(k) for k in ("rewards", "scores", "accs", "lengths", "truncated")},
        **st,
        kept_groups=min(n_kept, want),
        trained_equal_acc=trained_equal,
        picker=picker.metrics(),  # computed from pooled data: not reduced again
    )
    return Collected(batch, rewards, accs, stats)


def outcome_metrics(
    reward: torch.Tensor,
    acc: torch.Tensor,
    lens: torch.Tensor,
    trunc: torch.Tensor,
    group_size: int,
) -> dict[str, float]:
    """What each DAPO fix acts on, over every completion generated this step (all (N,),
    whole groups in order): lengths of correct and wrong completions (token-level loss,
    3.3), the reward of truncated ones (overlong shaping, 3.4) and the share of generated
    tokens in zero-variance groups, which carry no gradient (dynamic sampling, 3.2).
    A mean over an empty set is left out rather than reported as NaN."""
    right, trunc = acc > 0, trunc.bool()
    groups = right.view(-1, group_size)
    zero_var = (groups.all(1) | (~groups).all(1)).repeat_interleave(group_size)
    out = {"ds/zero_var_token_frac": float(lens[zero_var].sum() / lens.sum().clamp(min=1))}
    for key, sel, values in (
        ("len/correct_mean", right, lens),
        ("len/wrong_mean", ~right, lens),
        ("reward/truncated_mean", trunc, reward),
    ):
        if sel.any():
            out[key] = float(values[sel].mean())
    return out


def _rollout_metrics(col: Collected, cfg) -> dict[str, float]:
    st, lens = col.stats, col.stats.lengths
    generated, groups = len(lens), st.groups
    equal = st.equal_score if cfg.algo.filter_metric == "score" else st.equal_acc
    out = {
        "reward/mean": float(st.rewards.mean()),
        "reward/score_mean": float(st.scores.mean()),
        "acc/mean": float(st.accs.mean()),
        "len/mean": float(lens.mean()),
        "len/p50": float(lens.quantile(0.5)),
        "len/p90": float(lens.quantile(0.9)),
        "len/max": float(lens.max()),
        "len/truncated_frac": float(st.truncated.mean()),
        "ds/zero_var_frac": equal / groups,  # of what dynamic sampling compares
        "ds/equal_acc_frac": st.equal_acc / groups,
        "ds/equal_score_frac": st.equal_score / groups,
        "ds/sampled_groups": groups,
        "ds/all_correct_frac": st.all_correct / groups,
        "ds/all_wrong_frac": st.all_wrong / groups,
        "ds/gen_rounds": st.rounds,
        "ds/kept_groups": st.kept_groups,
        # groups in the update whose correctness carries no gradient (DAPO 3.2's waste)
        "ds/trained_zero_var_frac": st.trained_equal_acc / max(st.kept_groups, 1),
        "ds/completions_per_kept_group": generated / max(st.kept_groups, 1),
        "reward/timeouts": st.timeout,
        "reward/errors": st.error + st.nonfinite,
        "time/generate": st.gen_time,
        "time/reward": st.reward_time,
        "throughput/gen_tokens_per_s": st.gen_tokens / max(st.gen_time, 1e-9),
        "ds/gen_tokens": st.gen_tokens,
        **st.picker,
        **outcome_metrics(st.rewards, st.accs, st.lengths, st.truncated, cfg.rollout.group_size),
    }
    return out


def train_step(state) -> dict[str, float]:
    """One step of DESIGN.md's algorithm; returns the step's metrics."""
    cfg, a = state.cfg, state.cfg.algo
    t_start = time.perf_counter()
    col = collect(state)  # 1-5
    metrics = _rollout_metrics(col, cfg)
    if col.batch is None:
        warnings.warn("no informative group this step: skipping the update", stacklevel=2)
        metrics["time/step"] = time.perf_counter() - t_start
        return metrics
    batch = col.batch
    state.engine.sleep()  # a separate sampler (vLLM) frees its GPU memory for the update
    adv = group_advantages(
        col.rewards, cfg.rollout.group_size, scale=a.scale_adv, eps=a.adv_eps
    )  # 6
    loss_mask = truncation_mask(batch.mask, batch.truncated) if a.overlong_filter else batch.mask
    t0 = time.perf_counter()
    us = state.update_settings
    if us.recompute_old:  # asked for, or bfloat16 (config.recomputes_old_logprobs)
        old_logp = batched_logprobs(state.precision.working, batch, us)
    else:
        old_logp = batch.logp  # the sampler's log-probs: same weights, float32
    ref_logp = batched_logprobs(state.ref_model, batch, us) if state.ref_model is not None else None
    t1 = time.perf_counter()
    upd = policy_update(  # 7-8. clipped surrogate, token-level loss, K optimizer steps
        state.precision.working,  # computes; the optimizer steps the master (train/precision.py)
        state.optimizer,
        state.scheduler,
        batch,
        adv=adv,
        old_logp=old_logp,
        loss_mask=loss_mask,
        ref_logp=ref_logp,
        s=state.update_settings,
        generator=state.generator,
    )
    t2 = time.perf_counter()
    state.engine.sync_weights(state.model)  # a separate sampler (vLLM) follows the trainer
    metrics.update(upd)
    metrics["adv/abs_mean"] = float(adv.abs().mean())
    metrics["time/old_logprob"] = t1 - t0
    metrics["time/update"] = t2 - t1
    metrics["throughput/train_tokens_per_s"] = upd.pop("throughput/train_tokens") / max(
        t2 - t1, 1e-9
    )
    metrics.pop("throughput/train_tokens", None)
    metrics["time/step"] = time.perf_counter() - t_start
    return metrics
