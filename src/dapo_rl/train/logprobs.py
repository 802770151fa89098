"""The training forward: per-token log-probs and entropy of completion tokens.

Owns every call of the decoder and the LM head outside ``model.forward`` (the update needs
the decoder's states only at completion positions). Three choices bound its memory:

- **Shared prompts.** Consecutive rows whose prompts are identical (a group, or the part of
  a group a micro-batch holds) encode their prompt once; its keys and values are repeated for
  each row and gradients flow back through them into the one prompt pass. The caches that
  carry those keys are *replay-safe*: a layer re-run by activation checkpointing during the
  backward pass sees exactly the keys and values it saw in the forward (``_CaptureLayer``,
  ``_PrefixLayer``), which is why the decoder layers may keep their cache under
  checkpointing (``models.enable_grad_checkpointing``).
- **Logits in chunks** (``logits_chunk`` positions at a time): a (B, T, V) float32 logits
  tensor is never built. With gradients each chunk runs under non-reentrant
  ``torch.utils.checkpoint``, so only its hidden states are kept and its logits are
  recomputed, one chunk at a time, in the backward pass (one extra LM-head matmul).
- **The model's own logit post-processing** (Gemma-2 soft-capping, Granite and Cohere
  scaling) is applied through ``models.logits_transform``, as the model's forward does.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import checkpoint

from dapo_rl.algo import token_entropy
from dapo_rl.models import logits_transform
from dapo_rl.rollout import Rollout


def trim(batch: Rollout) -> Rollout:
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


def prompt_runs(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
    """Lengths of the runs of consecutive rows with identical prompts (ids and mask), (R,)."""
    same = (prompt_ids[1:] == prompt_ids[:-1]).all(1) & (prompt_mask[1:] == prompt_mask[:-1]).all(1)
    starts = torch.cat([torch.ones(1, dtype=torch.bool, device=same.device), ~same])
    return torch.bincount(starts.long().cumsum(0) - 1)


def _full_hidden(model, b: Rollout) -> torch.Tensor:
    """Decoder states that predict each completion token, one full sequence per row."""
    ids = torch.cat([b.prompt_ids, b.completion_ids], 1)  # (B, Tp + Tc)
    attn = torch.cat([b.prompt_mask, b.mask], 1)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    tp, tc = b.prompt_ids.shape[1], b.completion_ids.shape[1]
    hidden = model.get_decoder()(input_ids=ids, attention_mask=attn, position_ids=positions)
    return hidden.last_hidden_state[:, tp - 1 : tp - 1 + tc]  # (B, Tc, H)


@functools.cache
def _caches():
    """The two replay-safe cache layer types (transformers is imported only here)."""
    from transformers.cache_utils import DynamicLayer

    class _CaptureLayer(DynamicLayer):
        """Holds the keys and values of its last update: a replay stores the same again."""

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            self.keys, self.values = key_states, value_states
            return key_states, value_states

    class _PrefixLayer(DynamicLayer):
        """A fixed prefix: an update returns prefix + new keys and stores nothing."""

        def __init__(self, keys, values):
            super().__init__()
            self.lazy_initialization(keys, values)
            self.keys, self.values = keys, values

        def update(self, key_states, value_states, *args, **kwargs):
            return (
                torch.cat([self.keys, key_states], -2),
                torch.cat([self.values, value_states], -2),
            )

    return _CaptureLayer, _PrefixLayer


def _shared_prefix_hidden(model, b: Rollout, runs: torch.Tensor) -> torch.Tensor:
    """As ``_full_hidden``, but each run of rows with one prompt encodes it once."""
    from transformers import DynamicCache

    capture_layer, prefix_layer = _caches()
    tc = b.completion_ids.shape[1]
    first_rows = runs.cumsum(0) - runs
    p_ids, p_mask = b.prompt_ids[first_rows], b.prompt_mask[first_rows]  # (R, Tp)
    decoder = model.get_decoder()
    p_pos = (p_mask.cumsum(-1) - 1).clamp(min=0)
    capture = DynamicCache()
    capture.layer_class_to_replicate = capture_layer
    out = decoder(
        input_ids=p_ids,
        attention_mask=p_mask,
        position_ids=p_pos,
        cache=capture,
        use_cache=True,
    )
    first = out.last_hidden_state[:, -1:].repeat_interleave(runs, 0)  # predicts token 0
    if tc == 1:
        return first
    cache = DynamicCache()
    cache.layers = [
        prefix_layer(layer.keys.repeat_interleave(runs, 0), layer.values.repeat_interleave(runs, 0))
        for layer in capture.layers
    ]
    attn = torch.cat([p_mask.repeat_interleave(runs, 0), b.mask[:, :-1]], 1)
    c_pos = p_pos[:, -1:].repeat_interleave(runs, 0) + torch.arange(1, tc, device=p_pos.device)
    rest = decoder(
        input_ids=b.completion_ids[:, :-1],
        attention_mask=attn,
        position_ids=c_pos,
        cache=cache,
        use_cache=True,
    ).last_hidden_state
    return torch.cat([first, rest], 1)  # (B, Tc, H)


def head_logprobs(
    model,
    hidden: torch.Tensor,
    ids: torch.Tensor,
    *,
    temperature: float,
    entropy: bool,
    chunk: int = 0,
    autocast_dtype=None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of ``ids`` (B, T) under the LM head applied to ``hidden`` (B, T, H), and
    optionally the entropy at each position, ``chunk`` positions at a time (0: all at once)."""
    head = model.get_output_embeddings()
    transform = logits_transform(model.config)
    device = hidden.device

    def part(h: torch.Tensor, y: torch.Tensor):  # (n, H), (n,) -> (n,), (n,) | None
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = head(h)
        logits = logits.float()  # (n, V)
        if transform is not None:
            logits = transform(logits)
        if temperature > 0:
            logits = logits / temperature
        logp = torch.log_softmax(logits, -1).gather(-1, y[:, None])[:, 0]
        return logp, token_entropy(logits.detach()) if entropy else None

    shape = ids.shape
    flat_h, flat_y = hidden.reshape(-1, hidden.shape[-1]), ids.reshape(-1)
    if not chunk or flat_y.numel() <= chunk:
        parts = [part(flat_h, flat_y)]
    else:
        grad = torch.is_grad_enabled() and flat_h.requires_grad
        parts = [
            checkpoint(part, h, y, use_reentrant=False) if grad else part(h, y)
            for h, y in zip(flat_h.split(chunk), flat_y.split(chunk), strict=True)
        ]
    logp = torch.cat([p[0] for p in parts]).view(shape)
    ent = torch.cat([p[1] for p in parts]).view(shape) if entropy else None
    return logp, ent


def completion_logprobs(
    model,
    batch: Rollout,
    *,
    temperature: float,
    entropy: bool = False,
    autocast_dtype=None,
    share_prompt: bool = False,
    logits_chunk: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs of the completion tokens, (B, Tc), and optionally their entropy.

    With ``share_prompt`` consecutive rows with identical prompts encode them once.
    ``logits_chunk`` > 0 bounds the logits built at once to that many positions.
    Padded completion columns beyond the batch's longest completion are returned as 0.
    """
    full_width = batch.completion_ids.shape[1]
    device = model.get_output_embeddings().weight.device
    b = trim(batch).to(device)
    tc = b.completion_ids.shape[1]
    runs = prompt_runs(b.prompt_ids, b.prompt_mask) if share_prompt else None
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        if runs is not None and int(runs.max()) > 1:
            hidden = _shared_prefix_hidden(model, b, runs)
        else:
            hidden = _full_hidden(model, b)
    logp, ent = head_logprobs(
        model,
        hidden,
        b.completion_ids,
        temperature=temperature,
        entropy=entropy,
        chunk=logits_chunk,
        autocast_dtype=autocast_dtype,
    )
    pad = full_width - tc
    if pad:
        logp = torch.nn.functional.pad(logp, (0, pad))
        ent = torch.nn.functional.pad(ent, (0, pad)) if ent is not None else None
    return logp, ent
