"""The policy update: log-probs of completions, and K optimizer steps over mini-batches.

Owns the gradient-accumulation arithmetic. A rollout of B sequences is cut into
``mini_batches`` optimizer steps; each is accumulated over micro-batches whose losses are
normalised by the mini-batch's global token count (``token_mean``) or sequence count (the
per-sequence modes), so the accumulated gradient equals that of the whole mini-batch at
once (DAPO 3.3 token-level loss: every completion token of the mini-batch weighs the same).
Micro-batches are bounded by rows and, optionally, by padded tokens (``pack``). Before a
mini-batch (or the old-log-prob pass) is cut into micro-batches its rows - whole groups when
prompts are shared - are ordered longest completion first (``by_length``), so each
micro-batch, trimmed to its own longest completion, pads less. The forward itself (shared
prompts, logits in chunks, the model's logit post-processing) is ``train.logprobs``.

Data parallel (``dapo_rl.dist``): each rank holds whole groups of the rollout; the counts
that normalise the loss are all-reduced over ranks before each mini-batch's micro-batch
loop, and the ranks' gradients are summed before clipping, so every rank steps with the
gradient of the global mini-batch. Every rank takes the same number of optimizer steps
(a rank may hold no rows of a mini-batch and contribute a zero gradient). Metrics are
reduced once, at the end. With ``tis_cap`` the policy loss of each token is reweighted by
the truncated importance weight between the trainer's old log-probs and the sampler's
(``batch.logp``).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass

import torch

from dapo_rl import dist
from dapo_rl.algo import (
    aggregate,
    clipped_surrogate,
    kl_estimate,
    loss_denominators,
    sampler_mismatch,
    truncated_is_weight,
)
from dapo_rl.config import recomputes_old_logprobs
from dapo_rl.models import AdapterDisabled
from dapo_rl.rollout import Rollout
from dapo_rl.train.logprobs import completion_logprobs

__all__ = ["UpdateSettings", "batched_logprobs", "completion_logprobs", "policy_update"]


@dataclass(frozen=True)
class UpdateSettings:
    """What the update needs from the config, as plain values."""

    eps_low: float
    eps_high: float
    dual_clip: float | None
    loss_agg: str
    norm_len: int
    kl_coef: float
    kl_kind: str
    temperature: float
    mini_batches: int
    micro_batch_size: int
    max_grad_norm: float
    group_size: int = 1  # rows per group; mini- and micro-batches hold whole groups
    share_prompt: bool = True  # encode each group's prompt once (needs whole groups)
    autocast_dtype: torch.dtype | None = None
    tis_cap: float | None = None  # truncated importance-sampling cap C (None: no reweighting)
    logits_chunk: int = 0  # LM-head positions computed at once (0: a micro-batch at once)
    max_tokens: int = 0  # padded tokens a micro-batch may hold (0: rows decide alone)
    recompute_old: bool = False  # old log-probs from a training forward, not the sampler's

    @classmethod
    def from_config(cls, cfg, **overrides) -> UpdateSettings:
        """The settings a run's ``Config`` implies (``overrides`` replace single fields)."""
        a, t, r = cfg.algo, cfg.train, cfg.rollout
        values = dict(
            eps_low=a.eps_low,
            eps_high=a.eps_high,
            dual_clip=a.dual_clip,
            loss_agg=a.loss_agg,
            norm_len=a.norm_len or r.max_new_tokens,
            kl_coef=a.kl_coef,
            kl_kind=a.kl_kind,
            temperature=r.temperature,
            mini_batches=t.mini_batches_per_step,
            micro_batch_size=t.micro_batch_size,
            max_grad_norm=t.max_grad_norm,
            group_size=r.group_size,
            share_prompt=t.share_prompt,
            # FSDP runs still compute bf16 under autocast; one process uses a bf16 working
            # copy of the weights instead (train/precision.py)
            autocast_dtype=torch.bfloat16 if cfg.model.dtype == "bfloat16" and t.fsdp else None,
            tis_cap=a.tis_cap,
            logits_chunk=t.logits_chunk,
            max_tokens=t.max_tokens_per_micro_batch,
            recompute_old=recomputes_old_logprobs(cfg),
        )
        return cls(**{**values, **overrides})

    @property
    def prefix_group(self) -> int:
        """Rows that move together when micro-batches are ordered (whole groups if shared)."""
        return self.group_size if self.shares_prompt else 1

    @property
    def shares_prompt(self) -> bool:
        """Whether micro-batches hold whole groups whose prompt is encoded once."""
        return self.share_prompt and self.group_size > 1

    def micro_batches(self, rows: torch.Tensor, batch: Rollout) -> list[torch.Tensor]:
        """Split a mini-batch's row indices (whole groups) into micro-batches.

        At most ``micro_batch_size`` rows (rounded up to whole groups when the prompt is
        shared); with ``max_tokens`` also at most that many padded tokens (``pack``).
        """
        per = self.micro_batch_size
        if self.shares_prompt:
            per = max(1, self.micro_batch_size // self.group_size) * self.group_size
        if self.max_tokens <= 0:
            return [r for r in rows.split(per) if len(r)]
        group = self.group_size if self.shares_prompt else 1
        return pack(rows, batch, max_rows=per, max_tokens=self.max_tokens, group=group)

    def forward_kwargs(self) -> dict:
        """``completion_logprobs`` settings of every forward of the update."""
        return dict(
            temperature=self.temperature,
            autocast_dtype=self.autocast_dtype,
            share_prompt=self.shares_prompt,
            logits_chunk=self.logits_chunk,
        )


def _extents(batch: Rollout, rows: torch.Tensor) -> tuple[list[int], list[int]]:
    """Per row: columns from its first prompt token to the prompt's end (left padding),
    and from the completion's start to its last token."""
    pm, cm = batch.prompt_mask[rows] != 0, batch.mask[rows] != 0
    return (pm.cumsum(1) > 0).sum(1).tolist(), (cm.flip(1).cumsum(1) > 0).sum(1).tolist()


def pack(
    rows: torch.Tensor, batch: Rollout, *, max_rows: int, max_tokens: int, group: int
) -> list[torch.Tensor]:
    """Consecutive micro-batches of ``rows`` with at most ``max_rows`` rows and ``max_tokens``
    padded tokens each: prompts x longest prompt + rows x longest completion, a prompt counted
    once per group when ``group`` > 1 (shared), once per row otherwise.

    Whole groups are kept together unless one alone exceeds a limit; then its rows are packed
    one by one (the rows of a group that share a micro-batch still share their prompt). A
    single row above ``max_tokens`` forms a micro-batch of its own.
    """
    p_ext, c_ext = _extents(batch, rows)
    ids = rows.tolist()
    pieces = [list(range(i, min(i + group, len(ids)))) for i in range(0, len(ids), group)]
    out: list[list[int]] = []
    cur: list[int] = []

    def fits(idx: list[int]) -> bool:
        prompts = len({ids[i] // group for i in idx}) if group > 1 else len(idx)
        cost = prompts * max(p_ext[i] for i in idx) + len(idx) * max(c_ext[i] for i in idx)
        return len(idx) <= max_rows and cost <= max_tokens

    while pieces:
        piece = pieces.pop(0)
        if fits(cur + piece):
            cur += piece
            continue
        if cur:
            out.append(cur)
        if fits(piece) or len(piece) == 1:
            cur = piece
        else:
            cur = []
            pieces[:0] = [[i] for i in piece]
    if cur:
        out.append(cur)
    return [rows[torch.tensor(m)] for m in out]


@torch.no_grad()
def batched_logprobs(model, batch: Rollout, s: UpdateSettings) -> torch.Tensor:
    """Log-probs of a whole rollout without gradients (old policy or reference), (B, Tc).

    ``model`` may be ``models.AdapterDisabled``: a LoRA policy read with its adapter off,
    which is the reference policy of a LoRA run. The result is on the CPU, like the rollout.
    """
    context = contextlib.nullcontext()
    if isinstance(model, AdapterDisabled):
        model, context = model.model, model.model.disable_adapter()
    was_training = model.training
    model.eval()
    order = by_length(torch.arange(len(batch)), batch.lengths, s.prefix_group)
    micros = _lockstep(s.micro_batches(order, batch), len(batch), s, model)
    parts = []
    with context:
        for rows, weight in micros:
            logp, _ = dist.through_root(  # FSDP: the root's weights are gathered for this call
                model, completion_logprobs, model, batch.select(rows), **s.forward_kwargs()
            )
            parts.append(logp.cpu()[: len(rows) if weight else 0])  # FSDP padding adds no rows
    model.train(was_training)
    dist.reshard(model)  # FSDP: drop the gathered weights
    return torch.cat(parts)[order.argsort()]  # back to the rollout's row order


# Per-step sums, reduced over ranks once at the end of the update.
_SUMMED = (
    "loss",
    "entropy",
    "tokens",
    "loss_tokens",
    "clip_high",
    "clip_low",
    "dual",
    "clip_high_old_p",
    "kl",
    "mismatch_kl",
    "mismatch_out",
)


def by_length(rows: torch.Tensor, lengths: torch.Tensor, group: int = 1) -> torch.Tensor:
    """``rows`` reordered longest completion first, so that consecutive micro-batches hold
    completions of similar length and pad less (each micro-batch is trimmed to its longest).

    ``group > 1``: ``rows`` are whole contiguous groups of ``group`` rows, which move as one,
    keyed by their longest completion. The order of equal keys is kept (a stable sort).
    ``lengths`` (B,) are the completion lengths of the whole rollout.
    """
    if group > 1:
        key = lengths[rows].view(-1, group).max(1).values  # (groups,)
        order = key.argsort(descending=True, stable=True)
        return rows.view(-1, group)[order].flatten()
    return rows[lengths[rows].argsort(descending=True, stable=True)]


def _minibatches(n_groups: int, s: UpdateSettings, generator) -> list[torch.Tensor]:
    """Row indices of each optimizer mini-batch: whole groups, shuffled.

    ``s.mini_batches`` steps, fewer when no rank holds that many groups. Every rank takes
    the same number of steps; the run's k-th mini-batch is every rank's k-th part.
    """
    g = s.group_size
    groups = torch.randperm(n_groups, generator=generator)
    k = min(s.mini_batches, dist.all_reduce(n_groups, "max"))
    parts = groups.tensor_split(k) if k else ()
    return [(c[:, None] * g + torch.arange(g)).flatten() for c in parts]


def _lockstep(micros: list, rows: int, s: UpdateSettings, model) -> list[tuple]:
    """``micros`` with a weight of 1 each; with FSDP, padded to the most any rank has.

    Every FSDP forward and backward gathers and scatters over all ranks, so every rank must
    run as many as the others: a rank short of micro-batches repeats its first rows with
    weight 0 (their gradient is zero and their statistics are dropped).
    """
    out = [(m, 1.0) for m in micros]
    if not dist.model_is_sharded(model):
        return out
    spare = micros[0] if micros else torch.arange(min(rows, s.group_size))
    return out + [(spare, 0.0)] * (dist.all_reduce(len(micros), "max") - len(micros))


def _micro_step(
    model, sub: Rollout, micro, *, adv, old_logp, loss_mask, ref_logp, counts, s, sums, weight=1.0
):
    """Forward and backward of one micro-batch (its loss times ``weight``); adds its
    statistics to ``sums``."""
    logp, ent = dist.through_root(  # FSDP: gathers and reduce-scatters the root's weights
        model, completion_logprobs, model, sub, entropy=True, **s.forward_kwargs()
    )
    dev = logp.device
    old, sampler = old_logp[micro].to(dev), sub.logp.to(dev)  # (b, Tc)
    loss_tok, info = clipped_surrogate(
        logp,
        old,
        adv[micro].to(dev),
        eps_low=s.eps_low,
        eps_high=s.eps_high,
        dual_clip=s.dual_clip,
    )
    mm = loss_mask[micro].to(dev).bool()
    mismatch = sampler_mismatch(old, sampler, cap=s.tis_cap)
    sums["mismatch_kl"] += float(mismatch["kl"][mm].sum())
    if s.tis_cap is not None:
        # truncated importance sampling: the tokens were drawn by the sampler, not by pi_old
        loss_tok = loss_tok * truncated_is_weight(old, sampler, cap=s.tis_cap)
        sums["mismatch_out"] += float(mismatch["out_of_range"][mm].sum())
    if s.kl_coef > 0:
        kl = kl_estimate(logp, ref_logp[micro].to(dev), s.kl_kind)
        sums["kl"] += float(kl.detach()[mm].sum())
        loss_tok = loss_tok + s.kl_coef * kl
    loss = aggregate(
        loss_tok,
        mm,
        s.loss_agg,
        num_tokens=counts[0],
        norm_len=s.norm_len,
        num_seqs=counts[1],
    )
    (loss * weight).backward()
    real = sub.mask.to(dev).bool()
    sums["loss"] += float(loss.detach())
    sums["entropy"] += float(ent[real].sum())
    sums["tokens"] += float(real.sum())
    sums["loss_tokens"] += float(mm.sum())
    sums["clip_high"] += float(info["clipped_high"][mm].sum())
    sums["clip_low"] += float(info["clipped_low"][mm].sum())
    sums["dual"] += float(info["dual_clipped"][mm].sum())
    sums["clip_high_old_p"] += float(old[info["clipped_high"] & mm].exp().sum())


def policy_update(
    model,
    optimizer,
    scheduler,
    batch: Rollout,
    *,
    adv,
    old_logp,
    loss_mask,
    ref_logp,
    s: UpdateSettings,
    generator: torch.Generator,
) -> dict[str, float]:
    """K = ``s.mini_batches`` optimizer steps over a shuffled rollout; returns step metrics.

    In a data-parallel run ``batch`` is this rank's share of whole groups; the loss is
    normalised by the global counts and the metrics are the global batch's, on every rank.
    ``model`` computes; the optimizer steps its own parameters, which with a bf16 working
    copy (``train/precision.py``) are the float32 masters that its gradients flow into.
    """
    with _dropout_off(model):
        return _update(
            model, optimizer, scheduler, batch, adv, old_logp, loss_mask, ref_logp, s, generator
        )


@contextlib.contextmanager
def _dropout_off(model):
    """Eval mode for the update's forward passes, restored after: dropout off (as TRL does).

    The PPO ratio compares this forward with the old log-probs (the sampler's, or a
    recomputed no-dropout forward); dropout would make it a random number even at unchanged
    weights. Layers that checkpoint activations keep their training flag, because
    transformers recomputes a layer only in training mode; a Llama-family decoder layer
    holds no dropout of its own (its attention and MLP submodules do, and they stay off).
    """
    was = model.training
    model.eval()
    for m in model.modules():
        if getattr(m, "gradient_checkpointing", False) is True:
            m.training = True
    try:
        yield
    finally:
        model.train(was)


def _update(model, optimizer, scheduler, batch, adv, old_logp, loss_mask, ref_logp, s, generator):
    """The body of ``policy_update``, in the mode ``_dropout_off`` sets."""
    # the optimizer's parameters: with a bf16 working copy as ``model``, its float32 masters
    params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
    sums: dict[str, float] = defaultdict(float)
    minis = _minibatches(len(batch) // s.group_size, s, generator)
    grad_norm_sum, skipped, empty = 0.0, 0, 0
    for mini in minis:
        # DAPO 3.3 token-level loss: the denominators count the whole optimizer
        # mini-batch, over every micro-batch and every rank
        counts = dist.all_reduce(loss_denominators(loss_mask[mini], s.loss_agg))
        if counts[0] == 0:
            # no loss token on any rank (e.g. every row truncated and filtered): no step, as
            # AdamW would still move the weights through its momentum and weight decay
            empty += 1
            continue
        optimizer.zero_grad(set_to_none=True)
        micros = s.micro_batches(by_length(mini, batch.lengths, s.prefix_group), batch)
        for micro, weight in _lockstep(micros, len(batch), s, model):
            _micro_step(
                model,
                batch.select(micro),
                micro,
                adv=adv,
                old_logp=old_logp,
                loss_mask=loss_mask,
                ref_logp=ref_logp,
                counts=counts,
                s=s,
                sums=sums if weight else defaultdict(float),
                weight=weight,
            )
        dist.sum_gradients(params)  # partial gradients of one global loss: their sum
        grad_norm = dist.clip_gradients(params, s.max_grad_norm)
        grad_norm_sum += float(grad_norm)
        if torch.isfinite(grad_norm):
            optimizer.step()
            scheduler.step()
        else:
            skipped += 1
        optimizer.zero_grad(set_to_none=True)
    total = dist.all_reduce(torch.tensor([sums[k] for k in _SUMMED], dtype=torch.float64))
    t = dict(zip(_SUMMED, total.tolist(), strict=True))
    k, lt = max(len(minis) - empty, 1), max(t["loss_tokens"], 1.0)  # steps that ran
    out = {
        "loss/policy": t["loss"] / k,
        "entropy/mean": t["entropy"] / max(t["tokens"], 1.0),
        "clip/high_frac": t["clip_high"] / lt,
        "clip/low_frac": t["clip_low"] / lt,
        "clip/dual_frac": t["dual"] / lt,
        "clip/high_old_prob": t["clip_high_old_p"] / max(t["clip_high"], 1.0),
        "grad/norm": grad_norm_sum / k,
        "grad/skipped_steps": skipped,
        "grad/empty_minibatches": empty,
        "lr": scheduler.get_last_lr()[0],
        "mismatch/kl": t["mismatch_kl"] / lt,
        "throughput/train_tokens": t["tokens"],
    }
    if s.tis_cap is not None:
        out["mismatch/out_of_range_frac"] = t["mismatch_out"] / lt
    if s.kl_coef > 0:
        out["kl/mean"] = t["kl"] / lt
    return out
