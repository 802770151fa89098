"""The transformers rollout engine: batched sampling with a KV cache.

Owns sampling. A hand-written decode loop (rather than ``model.generate``) so that it
returns exactly what the trainer needs and nothing more: token ids, the completion mask
(the EOS token is part of the completion), the per-token log-probability of each sampled
token under the temperature-scaled policy (before top-p truncation, the distribution the
trainer's ratio refers to), lengths, and whether each completion was truncated (no EOS
within ``max_new_tokens``; every id in the generation config's EOS list counts). Prompts
are left-padded; positions come from the attention mask, so padding never shifts a
sequence. The loop stops as soon as every sequence ended.
Sampling draws from an explicit ``torch.Generator``, so a seeded run repeats exactly; on a
GPU the noise comes from a GPU generator seeded from it once per batch. The engine runs on
the model's device and returns its ``Rollout`` on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from dapo_rl import dist
from dapo_rl.rollout.lean import LeanDecoder, unsupported


@dataclass
class Rollout:
    """A batch of prompt + completion sequences. B sequences, prompt width Tp, completion Tc."""

    prompt_ids: torch.Tensor  # (B, Tp) left-padded
    prompt_mask: torch.Tensor  # (B, Tp) 1 on prompt tokens
    completion_ids: torch.Tensor  # (B, Tc) right-padded
    mask: torch.Tensor  # (B, Tc) 1 on completion tokens (EOS included)
    logp: torch.Tensor  # (B, Tc) sampling log-probs, 0 on padding
    lengths: torch.Tensor  # (B,) completion tokens
    truncated: torch.Tensor  # (B,) bool: no EOS within the limit

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def select(self, index: torch.Tensor | slice) -> Rollout:
        return Rollout(*(getattr(self, f.name)[index] for f in fields(self)))

    def to(self, device) -> Rollout:
        return Rollout(*(getattr(self, f.name).to(device) for f in fields(self)))


def _pad_to(x: torch.Tensor, width: int, value, left: bool) -> torch.Tensor:
    extra = width - x.shape[1]
    if extra <= 0:
        return x
    pad = torch.full((x.shape[0], extra), value, dtype=x.dtype, device=x.device)
    return torch.cat([pad, x] if left else [x, pad], dim=1)


def concat_rollouts(parts: list[Rollout], pad_id: int) -> Rollout:
    """Stack rollouts of different widths (prompts stay left-padded, completions right)."""
    tp = max(p.prompt_ids.shape[1] for p in parts)
    tc = max(p.completion_ids.shape[1] for p in parts)
    return Rollout(
        prompt_ids=torch.cat([_pad_to(p.prompt_ids, tp, pad_id, True) for p in parts]),
        prompt_mask=torch.cat([_pad_to(p.prompt_mask, tp, 0, True) for p in parts]),
        completion_ids=torch.cat([_pad_to(p.completion_ids, tc, pad_id, False) for p in parts]),
        mask=torch.cat([_pad_to(p.mask, tc, 0, False) for p in parts]),
        logp=torch.cat([_pad_to(p.logp, tc, 0.0, False) for p in parts]),
        lengths=torch.cat([p.lengths for p in parts]),
        truncated=torch.cat([p.truncated for p in parts]),
    )


def _scatter(values: torch.Tensor, rows: torch.Tensor, size: int, fill) -> torch.Tensor:
    """A (size,) tensor holding ``values`` at ``rows`` and ``fill`` elsewhere."""
    out = torch.full((size,), fill, dtype=values.dtype, device=values.device)
    return out.index_copy_(0, rows, values)


def sample_tokens(
    logits: torch.Tensor, *, temperature: float, top_p: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row. logits (B, V) -> (tokens (B,), logp (B,)).

    ``temperature == 0`` is greedy decoding (logp under the untempered policy).
    """
    logits = logits.float()
    if temperature == 0:
        tokens = logits.argmax(-1)
        return tokens, torch.log_softmax(logits, -1).gather(-1, tokens[:, None])[:, 0]
    logprobs = torch.log_softmax(logits / temperature, -1)  # (B, V)
    probs = logprobs.exp()
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    # Exponential race (argmax of p / E, E ~ Exp(1)) draws token i with probability p_i: one
    # pass over the vocabulary, with the noise drawn from the run's own generator.
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    tokens = (probs / noise).argmax(-1)
    return tokens, logprobs.gather(-1, tokens[:, None])[:, 0]


def _common_prefix_len(rows: list[list[int]]) -> int:
    first, n = rows[0], min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != first[i] for r in rows):
            return i
    return n


def eos_ids(model, tokenizer) -> list[int]:
    """Every token id that ends a completion: the tokenizer's EOS and each id the model's
    generation config lists (an int or a list: chat models often end a turn with one token
    and a document with another, e.g. Llama 3's ``<|eot_id|>`` and ``<|end_of_text|>``)."""
    listed = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    listed = list(listed) if isinstance(listed, list | tuple) else [listed]
    return list(dict.fromkeys(int(i) for i in [tokenizer.eos_token_id, *listed] if i is not None))


class HFEngine:
    """Samples completions from a transformers causal LM, in batches."""

    def __init__(
        self, model, tokenizer, *, batch_size: int = 64, autocast_dtype=None, lean: bool = True
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.autocast_dtype = autocast_dtype
        self.eos_id = tokenizer.eos_token_id
        self.eos_ids = torch.tensor(eos_ids(model, tokenizer), dtype=torch.long)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        # FSDP: every forward gathers weights from all ranks, so the ranks decode in lockstep
        self.lockstep = dist.model_is_sharded(model)
        # why the lean decode step (rollout/lean.py) is not used; None when it is
        self.lean_off = (
            "switched off" if not lean else "autocast" if autocast_dtype else unsupported(model)
        )

    def _finished(self, all_done: bool) -> bool:
        """Every row has ended (on every rank, when the ranks decode in lockstep)."""
        if self.lockstep:
            return dist.all_reduce(int(not all_done), "max") == 0
        return all_done

    @property
    def device(self) -> torch.device:
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def sync_weights(self, model) -> None:
        """Nothing to copy: this engine samples from the training model itself."""

    def sleep(self) -> None:
        """Nothing to free: this engine holds no memory between calls."""

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, width - len(e) :] = torch.tensor(e)
            mask[i, width - len(e) :] = 1
        return ids, mask

    def generate(
        self,
        prompts: list[str],
        *,
        n: int = 1,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> Rollout:
        """``n`` completions per prompt, grouped contiguously: row ``i*n + j``.

        At most ``batch_size`` (default: the engine's) sequences are decoded together.
        """
        per_batch = max(1, (batch_size or self.batch_size) // n)
        parts = []
        for start in range(0, len(prompts), per_batch):
            ids, mask = self.encode(prompts[start : start + per_batch])
            parts.append(
                self._generate_batch(ids, mask, n, max_new_tokens, temperature, top_p, generator)
            )
        return concat_rollouts(parts, self.pad_id)

    def _forward(self, **kw):
        with torch.autocast(
            self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            return self.model(**kw, use_cache=True, logits_to_keep=1).logits[:, -1]

    def _prefill(self, ids, prompt_mask, cache):
        """Run the prompts through the model into ``cache``.

        Returns the last-position logits (P, V), the attention mask the cache was built
        with, and each row's last position. When the prompts share a leading run of tokens
        (a system prompt, few-shot examples) it is computed once and its keys and values are
        repeated; each row's remaining tokens follow after padding, with positions that
        continue the shared run, so every row sees exactly its own prompt.
        """
        rows = [r[m.bool()].tolist() for r, m in zip(ids, prompt_mask, strict=True)]
        shared = _common_prefix_len(rows) if len(rows) > 1 else 0
        shared = min(shared, min(len(r) for r in rows) - 1)  # every row keeps >= 1 own token
        if shared < 2:
            positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
            logits = self._forward(
                input_ids=ids,
                attention_mask=prompt_mask,
                position_ids=positions,
                cache=cache,
            )
            return logits, prompt_mask, positions[:, -1:]
        dev = ids.device
        head = torch.tensor([rows[0][:shared]], device=dev)
        self._forward(
            input_ids=head,
            attention_mask=torch.ones_like(head),
            position_ids=torch.arange(shared, device=dev)[None],
            cache=cache,
        )
        cache.batch_repeat_interleave(len(rows))
        tails = [r[shared:] for r in rows]
        width = max(len(t) for t in tails)
        tail_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        tail_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, t in enumerate(tails):
            tail_ids[i, width - len(t) :], tail_mask[i, width - len(t) :] = torch.tensor(t), 1
        tail_ids, tail_mask = tail_ids.to(dev), tail_mask.to(dev)
        positions = (shared + tail_mask.cumsum(-1) - 1).clamp(min=shared)
        ones = torch.ones(len(rows), shared, dtype=torch.long, device=dev)
        attn = torch.cat([ones, tail_mask], 1)
        logits = self._forward(
            input_ids=tail_ids, attention_mask=attn, position_ids=positions, cache=cache
        )
        return logits, attn, positions[:, -1:]

    @torch.no_grad()
    def _generate_batch(self, ids, prompt_mask, n, max_new_tokens, temperature, top_p, generator):
        from transformers import DynamicCache

        was_training = self.model.training
        self.model.eval()
        dev = self.device
        ids, prompt_mask = ids.to(dev), prompt_mask.to(dev)
        if generator is not None and dev.type != "cpu":
            seed = int(torch.randint(2**62, (1,), generator=generator))
            generator = torch.Generator(dev).manual_seed(seed)
        cache = DynamicCache()
        logits, attn, step_pos = self._prefill(ids, prompt_mask, cache)
        # Each prompt is prefilled once; its KV cache is then shared by its n completions.
        logits, attn, step_pos = (x.repeat_interleave(n, 0) for x in (logits, attn, step_pos))
        cache.batch_repeat_interleave(n)
        if self.lean_off is None:  # the cache moves into preallocated buffers
            cache = LeanDecoder(self.model, cache, attn.shape[1] + max_new_tokens)
        ids, prompt_mask = ids.repeat_interleave(n, 0), prompt_mask.repeat_interleave(n, 0)
        batch = ids.shape[0]
        # Decoding runs on the rows still going: a row that ended leaves the batch (its cache
        # rows too) once a quarter of the rows still in it have ended.
        rows = torch.arange(batch, device=dev)  # original row of each row in the batch
        done = torch.zeros(batch, dtype=torch.bool, device=dev)  # (A,) of the rows in it
        tokens_out, logp_out, mask_out = [], [], []
        tok, eos = None, self.eos_ids.to(dev)
        for _ in range(max_new_tokens):
            if isinstance(cache, LeanDecoder):
                logits = logits if tok is None else cache.step(tok, step_pos, attn)
            elif tok is not None:
                logits = self._forward(
                    input_ids=tok[:, None],
                    attention_mask=attn,
                    position_ids=step_pos,
                    cache=cache,
                )
            tok, lp = sample_tokens(
                logits, temperature=temperature, top_p=top_p, generator=generator
            )
            tok = tok.masked_fill(done, self.pad_id)
            tokens_out.append(_scatter(tok, rows, batch, self.pad_id))
            logp_out.append(_scatter(lp.masked_fill(done, 0.0), rows, batch, 0.0))
            mask_out.append(_scatter(~done, rows, batch, False))
            done = done | torch.isin(tok, eos)  # any of the model's EOS ids ends a row
            n_done = int(done.sum())  # one device sync per token
            if self._finished(n_done == len(done)):
                break
            if n_done < len(done) and n_done * 4 >= len(done):
                keep = (~done).nonzero()[:, 0]
                if isinstance(cache, LeanDecoder):
                    cache.select(keep)
                else:
                    cache.batch_select_indices(keep)
                rows, tok, done, attn, step_pos = (
                    x[keep] for x in (rows, tok, done, attn, step_pos)
                )
            attn = torch.cat([attn, attn.new_ones(len(rows), 1)], dim=1)
            step_pos = step_pos + 1
        self.model.train(was_training)
        dist.reshard(self.model)  # FSDP: drop the gathered weights
        mask = torch.stack(mask_out, 1).long()
        ended = _scatter(done, rows, batch, True)  # rows that left the batch had ended
        return Rollout(
            prompt_ids=ids,
            prompt_mask=prompt_mask,
            completion_ids=torch.stack(tokens_out, 1),
            mask=mask,
            logp=torch.stack(logp_out, 1),
            lengths=mask.sum(1),
            truncated=~ended,
        ).to("cpu")
