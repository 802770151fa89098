"""The policy update: log-probs of completions, and K optimizer steps over mini-batches.

Owns the gradient-accumulation arithmetic. A rollout of B sequences is cut into
``mini_batches`` optimizer steps; each is accumulated over micro-batches whose losses are
normalised by the mini-batch's global token count (``token_mean``) or sequence count (the
per-sequence modes), so the accumulated gradient equals that of the whole mini-batch at
once (DAPO 3.3 token-level loss: every completion token of the mini-batch weighs the same).
Log-softmax is taken only at completion positions: the decoder's hidden states are sliced
before the LM head, so no prompt-position logits are ever built. Before a mini-batch (or
the old-log-prob pass) is cut into micro-batches its rows - whole groups when prompts are
shared - are ordered longest completion first (``by_length``), so each micro-batch, trimmed
to its own longest completion, pads less.

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
    sampler_mismatch,
    token_entropy,
    truncated_is_weight,
)
from dapo_rl.models import AdapterDisabled
from dapo_rl.rollout import Rollout


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
        )
        return cls(**{**values, **overrides})

    @property
    def prefix_group(self) -> int:
        """Group size handed to ``completion_logprobs`` (1 = no prompt sharing)."""
        return self.group_size if self.share_prompt else 1

    def micro_batches(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """Split a mini-batch's row indices (whole groups) into micro-batches."""
        per = self.micro_batch_size
        if self.share_prompt and self.group_size > 1:
            per = max(1, self.micro_batch_size // self.group_size) * self.group_size
        return [r for r in rows.split(per) if len(r)]


def _trim(batch: Rollout) -> Rollout:
    """Drop all-padding prompt columns (left) and completion columns (right)."""
    left = int((batch.prompt_mask.sum(0) == 0).long().cumprod(0).sum())
    width = int(batch.mask.sum(0).nonzero().max()) + 1 if bool(batch.mask.any()) else 1
    return Rollout(
        batch.prompt_ids[:, left:],
        batch.prompt_mask[:, left:],
        batch.completion_ids[:, :width],
        batch.mask[:, :width],
        batch.logp[:, :width],
        batch.lengths,
        batch.truncated,
    )


def _full_hidden(model, b: Rollout) -> torch.Tensor:
    """Decoder states that predict each completion token, one full sequence per row."""
    ids = torch.cat([b.prompt_ids, b.completion_ids], 1)  # (B, Tp + Tc)
    attn = torch.cat([b.prompt_mask, b.mask], 1)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    tp, tc = b.prompt_ids.shape[1], b.completion_ids.shape[1]
    hidden = model.get_decoder()(input_ids=ids, attention_mask=attn, position_ids=positions)
    return hidden.last_hidden_state[:, tp - 1 : tp - 1 + tc]  # (B, Tc, H)


def _shared_prefix_hidden(model, b: Rollout, group_size: int) -> torch.Tensor:
    """As ``_full_hidden``, but each group's prompt goes through the model once.

    The prompt's keys and values are computed once per group and repeated for its G
    completions; gradients flow back through them into the shared prompt pass. Rows must
    come in whole groups whose prompts are identical.
    """
    from transformers import DynamicCache

    rows, tc = b.prompt_ids.shape[0], b.completion_ids.shape[1]
    if rows % group_size:
        raise ValueError(f"{rows} rows are not whole groups of {group_size}")
    p_ids, p_mask = b.prompt_ids[::group_size], b.prompt_mask[::group_size]  # (g, Tp)
    if not torch.equal(p_ids.repeat_interleave(group_size, 0), b.prompt_ids):
        raise ValueError("rows of a group do not share one prompt")
    decoder = model.get_decoder()
    p_pos = (p_mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    out = decoder(
        input_ids=p_ids,
        attention_mask=p_mask,
        position_ids=p_pos,
        past_key_values=cache,
        use_cache=True,
    )
    first = out.last_hidden_state[:, -1:].repeat_interleave(group_size, 0)  # predicts token 0
    if tc == 1:
        return first
    cache.batch_repeat_interleave(group_size)
    attn = torch.cat([p_mask.repeat_interleave(group_size, 0), b.mask[:, :-1]], 1)
    c_pos = p_pos[:, -1:].repeat_interleave(group_size, 0) + torch.arange(
        1, tc, device=p_pos.device
    )
    rest = decoder(
        input_ids=b.completion_ids[:, :-1],
        attention_mask=attn,
        position_ids=c_pos,
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state
    return torch.cat([first, rest], 1)  # (B, Tc, H)


def completion_logprobs(
    model,
    batch: Rollout,
    *,
    temperature: float,
    entropy: bool = False,
    autocast_dtype=None,
    group_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs of the completion tokens, (B, Tc), and optionally their entropy.

    With ``group_size > 1`` the rows are whole groups and each prompt is encoded once.
    Padded completion columns beyond the batch's longest completion are returned as 0.
    """
    full_width = batch.completion_ids.shape[1]
    device = model.get_output_embeddings().weight.device
    b = _trim(batch).to(device)
    tc = b.completion_ids.shape[1]
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        if group_size > 1:
            hidden = _shared_prefix_hidden(model, b, group_size)
        else:
            hidden = _full_hidden(model, b)
        logits = model.get_output_embeddings()(hidden)
    logits = logits.float()  # (B, Tc, V)
    if temperature > 0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, -1).gather(-1, b.completion_ids[..., None])[..., 0]
    ent = token_entropy(logits.detach()) if entropy else None
    pad = full_width - tc
    if pad:
        logp = torch.nn.functional.pad(logp, (0, pad))
        ent = torch.nn.functional.pad(ent, (0, pad)) if ent is not None else None
    return logp, ent


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
    with context:
        parts = [
            completion_logprobs(
                model,
                batch.select(rows),
                temperature=s.temperature,
                autocast_dtype=s.autocast_dtype,
                group_size=s.prefix_group,
            )[0].cpu()[: len(rows) if weight else 0]  # FSDP padding adds no rows
            for rows, weight in _lockstep(s.micro_batches(order), len(batch), s, model)
        ]
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
    logp, ent = completion_logprobs(
        model,
        sub,
        temperature=s.temperature,
        entropy=True,
        autocast_dtype=s.autocast_dtype,
        group_size=s.prefix_group,
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
    model.train()
    # the optimizer's parameters: with a bf16 working copy as ``model``, its float32 masters
    params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
    sums: dict[str, float] = defaultdict(float)
    minis = _minibatches(len(batch) // s.group_size, s, generator)
    grad_norm_sum, skipped = 0.0, 0
    for mini in minis:
        m = loss_mask[mini]
        seqs = (m.sum(1) > 0).sum() if s.loss_agg == "seq_mean_token_mean" else len(mini)
        # DAPO 3.3 token-level loss: the denominators count the whole optimizer
        # mini-batch, over every micro-batch and every rank
        counts = dist.all_reduce(torch.tensor([float(m.sum()), float(seqs)], dtype=torch.float64))
        optimizer.zero_grad(set_to_none=True)
        micros = s.micro_batches(by_length(mini, batch.lengths, s.prefix_group))
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
    k, lt = max(len(minis), 1), max(t["loss_tokens"], 1.0)
    out = {
        "loss/policy": t["loss"] / k,
        "entropy/mean": t["entropy"] / max(t["tokens"], 1.0),
        "clip/high_frac": t["clip_high"] / lt,
        "clip/low_frac": t["clip_low"] / lt,
        "clip/dual_frac": t["dual"] / lt,
        "clip/high_old_prob": t["clip_high_old_p"] / max(t["clip_high"], 1.0),
        "grad/norm": grad_norm_sum / k,
        "grad/skipped_steps": skipped,
        "lr": scheduler.get_last_lr()[0],
        "mismatch/kl": t["mismatch_kl"] / lt,
        "throughput/train_tokens": t["tokens"],
    }
    if s.tis_cap is not None:
        out["mismatch/out_of_range_frac"] = t["mismatch_out"] / lt
    if s.kl_coef > 0:
        out["kl/mean"] = t["kl"] / lt
    return out
