"""Every id in the generation config's EOS list ends a completion (issue 12)."""

from __future__ import annotations

import copy

import torch

from dapo_rl.rollout import HFEngine
from dapo_rl.rollout.engine import eos_ids


def test_eos_ids_merge_the_tokenizer_and_the_generation_config(tiny_model, tokenizer):
    model = copy.deepcopy(tiny_model)
    eos = tokenizer.eos_token_id
    model.generation_config.eos_token_id = [eos, 7, eos]
    assert eos_ids(model, tokenizer) == [eos, 7]
    model.generation_config.eos_token_id = 9
    assert eos_ids(model, tokenizer) == [eos, 9]
    model.generation_config.eos_token_id = None
    assert eos_ids(model, tokenizer) == [eos]


def test_a_second_eos_id_in_the_generation_config_ends_the_completion(tiny_model, tokenizer):
    # greedy decoding: the first token the model picks is declared a second EOS id, so every
    # completion must end right there, one token long and not truncated
    model = copy.deepcopy(tiny_model)
    prompts = ["What is 2 + 3?"]
    plain = HFEngine(model, tokenizer).generate(prompts, max_new_tokens=6, temperature=0.0)
    first = int(plain.completion_ids[0, 0])
    assert first != tokenizer.eos_token_id and int(plain.lengths[0]) > 1
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, first]
    out = HFEngine(model, tokenizer).generate(prompts, max_new_tokens=6, temperature=0.0)
    assert out.lengths.tolist() == [1] and out.truncated.tolist() == [False]
    assert out.mask[0].tolist() == [1] + [0] * (out.mask.shape[1] - 1)
    assert torch.equal(out.completion_ids[0, :1], plain.completion_ids[0, :1])
