"""A tiny random Qwen2-style model with an untied LM head (as Qwen2.5-7B and Llama-3 have).

``tiny-random`` ties its head to the embeddings; code that handles the head must also be
right when it is a separate weight. Built in-process with the tiny-random tokenizer's
vocabulary; ``save_untied`` writes it as a local model folder ``model.name`` accepts.
"""

from __future__ import annotations

from pathlib import Path

import torch


def untied_model(seed: int = 0):
    from transformers import AutoModelForCausalLM, Qwen2Config

    from dapo_rl.models import load_tokenizer

    tok = load_tokenizer("tiny-random")
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    return model


def save_untied(path: Path, seed: int = 0) -> Path:
    """The untied model and the tiny-random tokenizer saved as a model folder."""
    from dapo_rl.models import load_tokenizer

    untied_model(seed).save_pretrained(path)
    load_tokenizer("tiny-random").save_pretrained(path)
    return Path(path)
