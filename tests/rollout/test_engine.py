"""The transformers rollout engine on the tiny model: layout, determinism, exact log-probs."""

from __future__ import annotations

import warnings

import torch

from dapo_rl.rollout import HFEngine, Rollout, concat_rollouts, sample_tokens
from dapo_rl.train.update import completion_logprobs

PROMPTS = ["What is 2 + 3?", "A longer prompt about the sum of 11 and 12, please answer it."]


def _generate(model, tokenizer, seed=0, **kw):
    engine = HFEngine(model, tokenizer, batch_size=kw.pop("batch_size", 64))
    kw.setdefault("max_new_tokens", 12)
    return engine.generate(PROMPTS, n=3, generator=torch.Generator().manual_seed(seed), **kw)


def test_layout_and_masks(tiny_model, tokenizer):
    ro = _generate(tiny_model, tokenizer)
    assert len(ro) == 6  # 2 prompts x 3 completions, grouped contiguously
    # rows of one group share the prompt
    assert torch.equal(ro.prompt_ids[0], ro.prompt_ids[2]) and not torch.equal(
        ro.prompt_ids[0], ro.prompt_ids[3]
    )
    # prompts left-padded: the last prompt column is always a real token
    assert bool(ro.prompt_mask[:, -1].all())
    # completion mask is a prefix of ones; lengths count it
    for row in ro.mask:
        n = int(row.sum())
        assert row[:n].all() and not row[n:].any()
    assert torch.equal(ro.lengths, ro.mask.sum(1))
    # truncated <=> no EOS among the completion tokens
    eos = tokenizer.eos_token_id
    has_eos = ((ro.completion_ids == eos) & ro.mask.bool()).any(1)
    assert torch.equal(ro.truncated, ~has_eos)
    assert bool((ro.logp[ro.mask.bool()] <= 0).all()) and bool(
        (ro.logp[~ro.mask.bool()] == 0).all()
    )


def test_seeded_sampling_repeats_and_batching_does_not_matter(tiny_model, tokenizer):
    a = _generate(tiny_model, tokenizer, seed=1)
    b = _generate(tiny_model, tokenizer, seed=1)
    c = _generate(tiny_model, tokenizer, seed=2)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert not torch.equal(a.completion_ids, c.completion_ids)


def test_decoding_uses_the_current_cache_argument(tiny_model, tokenizer):
    # transformers 5.24 renamed forward's past_key_values to cache and warns once per call
    # with the old name (dozens of FutureWarnings per step on the console)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        ro = _generate(tiny_model, tokenizer, max_new_tokens=4)
    assert len(ro) == 6


def test_sampling_logprobs_match_a_training_forward(tiny_model, tokenizer):
    ro = _generate(tiny_model, tokenizer, temperature=0.7)
    logp, _ = completion_logprobs(tiny_model, ro, temperature=0.7)
    m = ro.mask.bool()
    assert torch.allclose(logp[m], ro.logp[m], atol=1e-4)


class _ScriptedLM(torch.nn.Module):
    """Greedy-decodes token 5 until row i's step ``stop[i]`` (>= 1), then EOS (id 2).

    Call 0 is the prefill (one row per prompt), so its token is 5 for every row.
    """

    def __init__(self, stop):
        super().__init__()
        self.stop, self.calls = stop, 0

    def forward(self, input_ids, cache, **kw):
        batch = input_ids.shape[0]
        logits = torch.zeros(batch, 1, 8)
        step = self.calls
        self.calls += 1
        if step == 1:  # the first decoding step: tag each row in the cache with its number
            tag = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1)
            cache.update(tag, tag, 0)
        # the engine drops ended rows from the batch and the cache: the tags follow the rows
        rows = cache.layers[0].keys[:, 0, 0, 0].long() if step else range(batch)
        for i, row in enumerate(rows):
            logits[i, 0, 2 if step >= self.stop[int(row) % len(self.stop)] else 5] = 10.0
        return type("Out", (), {"logits": logits})()


class _Tok:
    eos_token_id, pad_token_id = 2, 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [7] * len(text.split())}


def test_eos_ends_rows_and_generation_stops_once_all_ended():
    # one prompt, n=3 rows ending at steps 1, 3, 2: lengths 2, 4, 3 (EOS counted)
    engine = HFEngine(_ScriptedLM([1, 3, 2]), _Tok())
    ro = engine.generate(["a b"], n=3, max_new_tokens=10, temperature=0.0)
    assert ro.lengths.tolist() == [2, 4, 3]
    assert ro.completion_ids.tolist() == [[5, 2, 0, 0], [5, 5, 5, 2], [5, 5, 2, 0]]
    assert ro.completion_ids.shape[1] == 4  # stopped after the last EOS, not at 10
    assert ro.truncated.tolist() == [False, False, False]


def test_rows_without_eos_are_truncated():
    engine = HFEngine(_ScriptedLM([1, 99]), _Tok())
    ro = engine.generate(["a", "b c"], n=1, max_new_tokens=4, temperature=0.0)
    assert ro.lengths.tolist() == [2, 4]
    assert ro.truncated.tolist() == [False, True]


def test_greedy_is_argmax():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    tok, lp = sample_tokens(logits, temperature=0.0, top_p=1.0, generator=None)
    assert tok.tolist() == [1, 0]
    assert torch.allclose(lp, torch.log_softmax(logits, -1)[[0, 1], [1, 0]])


def test_top_p_never_samples_outside_the_nucleus():
    # probs 0.6, 0.3, 0.1: top_p=0.5 keeps only the first; top_p=0.8 keeps the first two
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    tok, _ = sample_tokens(logits, temperature=1.0, top_p=0.5, generator=g)
    assert set(tok.tolist()) == {0}
    tok, lp = sample_tokens(logits, temperature=1.0, top_p=0.8, generator=g)
    assert set(tok.tolist()) == {0, 1}
    # logp is under the full tempered distribution, not the renormalised nucleus
    assert torch.allclose(lp[tok == 1], torch.tensor(0.3).log())


def test_temperature_sampling_frequencies():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(20000, 1)
    tok, _ = sample_tokens(
        logits, temperature=1.0, top_p=1.0, generator=torch.Generator().manual_seed(0)
    )
    freq = torch.bincount(tok, minlength=3).float() / len(tok)
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.02)


def test_concat_rollouts_pads_both_sides():
    def ro(tp, tc):
        return Rollout(
            torch.ones(1, tp, dtype=torch.long),
            torch.ones(1, tp, dtype=torch.long),
            torch.ones(1, tc, dtype=torch.long),
            torch.ones(1, tc, dtype=torch.long),
            -torch.ones(1, tc),
            torch.tensor([tc]),
            torch.tensor([False]),
        )

    out = concat_rollouts([ro(2, 3), ro(4, 1)], pad_id=9)
    assert out.prompt_ids.tolist() == [[9, 9, 1, 1], [1, 1, 1, 1]]
    assert out.prompt_mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert out.completion_ids.tolist() == [[1, 1, 1], [1, 9, 9]]
    assert out.mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out.logp.tolist() == [[-1, -1, -1], [-1, 0, 0]]


def test_shared_prompt_prefix_changes_nothing(tiny_model, tokenizer):
    # chat-templated prompts share the system turn: the prefix is encoded once, and the
    # completions and their log-probs are those of encoding each prompt in full
    from dapo_rl.data.templates import build_prompt

    prompts = [
        build_prompt(tokenizer, p, "dapo_oneshot") for p in ("What is 2 + 3?", "What is 17 + 18?")
    ]
    engine = HFEngine(tiny_model, tokenizer)
    ids, mask = engine.encode(prompts)
    from transformers import DynamicCache

    shapes = []
    forward = engine._forward
    engine._forward = lambda **kw: shapes.append(tuple(kw["input_ids"].shape)) or forward(**kw)
    logits, _, _ = engine._prefill(ids, mask, DynamicCache())
    engine._forward = forward
    # one pass over the shared run (batch 1), one over the two prompts' own tails
    assert shapes[0][0] == 1 and shapes[0][1] > 20 and shapes[1][0] == 2
    assert shapes[0][1] + shapes[1][1] == ids.shape[1]
    full = tiny_model(
        input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)
    ).logits[:, -1]
    assert torch.allclose(logits, full, atol=1e-4)
    ro = engine.generate(prompts, n=2, max_new_tokens=6, generator=torch.Generator().manual_seed(0))
    logp, _ = completion_logprobs(tiny_model, ro, temperature=1.0)
    assert torch.allclose(logp[ro.mask.bool()], ro.logp[ro.mask.bool()], atol=1e-4)


def test_rows_that_end_leave_the_batch_without_changing_the_others():
    from dapo_rl.models import load_model, load_tokenizer

    model, tok = load_model("tiny-random", seed=0), load_tokenizer("tiny-random")
    engine = HFEngine(model, tok)
    prompts = ["What is 2 + 3?", "Add 7 and 9.", "Name a prime.", "Count to four."]
    engine.eos_ids = torch.tensor([-1])  # first a run with no end: pick an end token some
    free = engine.generate(prompts, n=1, max_new_tokens=8, temperature=0.0)  # rows reach early
    engine.eos_ids = free.completion_ids[0, 1:2].clone()
    batched = engine.generate(prompts, n=1, max_new_tokens=8, temperature=0.0)
    alone = [engine.generate([p], n=1, max_new_tokens=8, temperature=0.0) for p in prompts]
    lengths = batched.lengths.tolist()
    assert min(lengths) < max(lengths)  # rows ended at different steps: the batch shrank
    for i, one in enumerate(alone):
        n = lengths[i]
        assert one.lengths.tolist() == [n]
        assert batched.completion_ids[i, :n].tolist() == one.completion_ids[0, :n].tolist()
        assert torch.allclose(batched.logp[i, :n], one.logp[0, :n], atol=1e-4)
        assert bool(batched.truncated[i]) == bool(one.truncated[0])
    assert (batched.mask.sum(1) == batched.lengths).all()
