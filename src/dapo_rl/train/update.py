"""The policy update: log-probs of completions, and K optimizer steps over mini-batches.

Owns the gradient-accumulation arithmetic. A rollout of B sequences is cut into
``mini_batches`` optimizer steps; each is accumulated over micro-batches whose losses are
normalised by the mini-batch's global token count (``token_mean``) or sequence count (the
per-sequence modes), so the accumulated gradient equals that of the whole mini-batch at
once (DAPO 3.3 token-level loss: every completion token of the mini-batch weighs the same).
Log-softmax is taken only at completion positions: the decoder's hidden states are sliced
before the LM head, so no prompt-position logits are ever built.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from dapo_rl.algo import aggregate, clipped_surrogate, kl_estimate, token_entropy
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

    @property
    def prefix_group(self) -> int:
        """Group size handed to ``completion_logprobs`` (1 = no prompt sharing)."""
        return self.group_size if self.share_prompt else 1

    def micro_batches(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """Split a mini-batch's row indices (whole groups) into micro-batches."""
        if self.share_prompt and self.group_size > 1:
            per = max(1, self.micro_batch_size // self.group_size) * self.group_size
            return list(rows.split(per))
        return list(rows.split(self.micro_batch_size))


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
    c_pos = p_pos[:, -1:].repeat_interleave(group_size, 0) + torch.arange(1, tc)
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
    b = _trim(batch)
    tc = b.completion_ids.shape[1]
    with torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None):
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
    """Log-probs of a whole rollout without gradients (old policy or reference), (B, Tc)."""
    was_training = model.training
    model.eval()
    parts = [
        completion_logprobs(
            model,
            batch.select(rows),
            temperature=s.temperature,
            autocast_dtype=s.autocast_dtype,
            group_size=s.prefix_group,
        )[0]
        for rows in s.micro_batches(torch.arange(len(batch)))
    ]
    model.train(was_training)
    return torch.cat(parts)


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
    """K = ``s.mini_batches`` optimizer steps over a shuffled rollout; returns step metrics."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    g = s.group_size
    groups = torch.randperm(len(batch) // g, generator=generator)
    sums: dict[str, float] = defaultdict(float)
    # mini-batches of whole groups; fewer than K when there are fewer groups than K
    minis = [(c[:, None] * g + torch.arange(g)).flatten() for c in groups.chunk(s.mini_batches)]
    for mini in minis:
        m = loss_mask[mini]
        num_tokens = m.sum()
        num_seqs = (m.sum(1) > 0).sum() if s.loss_agg == "seq_mean_token_mean" else len(mini)
        optimizer.zero_grad(set_to_none=True)
        for micro in s.micro_batches(mini):
            sub = batch.select(micro)
            logp, ent = completion_logprobs(
                model,
                sub,
                temperature=s.temperature,
                entropy=True,
                autocast_dtype=s.autocast_dtype,
                group_size=s.prefix_group,
            )
            loss_tok, info = clipped_surrogate(
                logp,
                old_logp[micro],
                adv[micro],
                eps_low=s.eps_low,
                eps_high=s.eps_high,
                dual_clip=s.dual_clip,
            )
            mm = loss_mask[micro].bool()
            if s.kl_coef > 0:
                kl = kl_estimate(logp, ref_logp[micro], s.kl_kind)
                sums["kl"] += float(kl.detach()[mm].sum())
                loss_tok = loss_tok + s.kl_coef * kl
            loss = aggregate(
                loss_tok,
                mm,
                s.loss_agg,
                num_tokens=num_tokens,
                norm_len=s.norm_len,
                num_seqs=num_seqs,
            )
            loss.backward()
            sums["loss"] += float(loss.detach())
            real = sub.mask.bool()
            sums["entropy"] += float(ent[real].sum())
            sums["tokens"] += float(real.sum())
            sums["loss_tokens"] += float(mm.sum())
            sums["clip_high"] += float(info["clipped_high"][mm].sum())
            sums["clip_low"] += float(info["clipped_low"][mm].sum())
            sums["dual"] += float(info["dual_clipped"][mm].sum())
            sums["clip_high_old_p"] += float(old_logp[micro][info["clipped_high"] & mm].exp().sum())
        grad_norm = torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
        sums["grad_norm"] += float(grad_norm)
        if torch.isfinite(grad_norm):
            optimizer.step()
            scheduler.step()
        else:
            sums["skipped"] += 1
        optimizer.zero_grad(set_to_none=True)
    k, lt = len(minis), max(sums["loss_tokens"], 1.0)
    out = {
        "loss/policy": sums["loss"] / k,
        "entropy/mean": sums["entropy"] / max(sums["tokens"], 1.0),
        "clip/high_frac": sums["clip_high"] / lt,
        "clip/low_frac": sums["clip_low"] / lt,
        "clip/dual_frac": sums["dual"] / lt,
        "clip/high_old_prob": sums["clip_high_old_p"] / max(sums["clip_high"], 1.0),
        "grad/norm": sums["grad_norm"] / k,
        "grad/skipped_steps": sums["skipped"],
        "lr": scheduler.get_last_lr()[0],
        "throughput/train_tokens": sums["tokens"],
    }
    if s.kl_coef > 0:
        out["kl/mean"] = sums["kl"] / lt
    return out
