"""Tiny models for the weight-streaming tests: an untied LM head, a LoRA with a non-zero delta."""

from __future__ import annotations

import copy

import torch

from dapo_rl.models import load_model


def untied():
    """The tiny model with its own LM head (twice the embeddings), as Qwen2.5-7B and Llama-3."""
    model = load_model("tiny-random", seed=0)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone() * 2)
    return model


def lora(model, **config):
    """``model`` (copied) in a PEFT LoRA adapter; A from seed 0, B drawn too (PEFT zeroes it)."""
    from peft import LoraConfig, get_peft_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        wrapped = get_peft_model(copy.deepcopy(model), LoraConfig(lora_dropout=0.0, **config))
    with torch.no_grad():  # B starts at zero: give the delta something to show
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    return wrapped
