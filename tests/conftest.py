"""Shared fixtures: the tiny random model and its (real SmolLM2) tokenizer, built once."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# Property tests draw new examples on every local run (that is how they find bugs); CI draws
# a fixed sequence, so a landing never depends on the luck of the draw.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# model.dtype=auto resolves to float32 in every test and every process a test starts, so
# the suite computes the same numbers on machines with and without bf16 matrix units
# (tests of the resolution itself patch dapo_rl.perf.has_bf16_units).
os.environ["DAPO_RL_BF16_UNITS"] = "0"

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
