"""Shared fixtures: the tiny random model and its (real SmolLM2) tokenizer, built once."""

from __future__ import annotations

import pytest
import torch

# The test models are tiny: one thread avoids thread-pool overhead that dominates their runtime.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    from dapo_rl.models import load_tokenizer

    return load_tokenizer("tiny-random")


@pytest.fixture()
def tiny_model():
    from dapo_rl.models import load_model

    torch.manual_seed(0)
    return load_model("tiny-random", seed=0)
