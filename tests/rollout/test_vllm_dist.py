"""The vLLM adapter on two gloo ranks (CPU): FSDP2-sharded weights and a tensor-parallel pair.

Runs this file under ``torchrun --standalone --nproc_per_node 2`` once (``_worker``); each
rank talks to its own ``fake_vllm.FakeLLM`` and saves what it sent and got. The parameters
are sharded with FSDP2 (``fully_shard`` on every decoder layer and on the root), so each is
a ``DTensor`` holding half the rows: the streamed weights must still be whole, equal to the
unsharded model's (LoRA: to PEFT's ``merge_and_unload``), and identical on both ranks.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fake_vllm import LIMIT, FakeLLM, sampling_params, script
from tiny_models import lora, untied

from dapo_rl import dist
from dapo_rl.config import build
from dapo_rl.rollout.vllm_engine import VLLMEngine, VLLMSettings

PROMPTS = (["ab"], ["xyz", "q"])  # rank 0's and rank 1's
pytestmark = pytest.mark.slow  # two torchrun processes: about 30 s of CPU, more on a busy machine


class CharTokenizer:
    eos_token_id, pad_token_id = 2, 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def _shard(model, layers) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.world_size(),))
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _bf16(model) -> dict:
    return {k: v.detach().to(torch.bfloat16) for k, v in model.named_parameters()}


def _sync(model, expected: dict, tp: int = 1) -> dict:
    """Stream ``model`` into a fresh fake engine; what it got, beside what it should get."""
    from torch.distributed.tensor import DTensor

    engine = VLLMEngine(
        CharTokenizer(),
        VLLMSettings.from_config(build(), model="unused", tp=tp, max_new_tokens=LIMIT),
        llm=FakeLLM(),
        sampling_params=sampling_params,
    )
    engine.sync_weights(model)
    fake = engine.llm.model
    return {
        "sharded": all(isinstance(p, DTensor) for p in model.parameters()),
        "order": fake.order,
        "loaded": fake.loaded,
        "expected": expected,
        "peak_alive": fake.peak_alive,
    }


def _rows(ids, mask) -> list[list[int]]:
    return [r[m.bool()].tolist() for r, m in zip(ids, mask, strict=True)]


def _worker(out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_from_env()
    rank, result = dist.rank(), {}
    model = untied()
    expected = _bf16(model)
    _shard(model, model.model.layers)
    result["plain"] = _sync(model, expected)
    adapted = lora(untied(), r=2, lora_alpha=4.0, target_modules="all-linear")
    expected = _bf16(copy.deepcopy(adapted).merge_and_unload())
    _shard(adapted, adapted.get_base_model().model.layers)
    result["lora"] = _sync(adapted, expected)
    engine = VLLMEngine(  # ranks 0 and 1 share one tensor-parallel engine
        CharTokenizer(),
        VLLMSettings.from_config(build(), model="unused", tp=2, max_new_tokens=LIMIT),
        llm=FakeLLM(),
        sampling_params=sampling_params,
    )
    ro = engine.generate(PROMPTS[rank], n=2, max_new_tokens=LIMIT)
    result["tp"] = {
        "seen": [p["prompt_token_ids"] for p in engine.llm.calls[0][0]],
        "prompt_ids": _rows(ro.prompt_ids, ro.prompt_mask),
        "completions": _rows(ro.completion_ids, ro.mask),
    }
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    pytest.importorskip("peft")
    tmp = tmp_path_factory.mktemp("vllm_dist")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*cmd, __file__, str(tmp)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("kind", ["plain", "lora"])
def test_sharded_weights_stream_whole_one_at_a_time_and_alike_on_every_rank(two_ranks, kind):
    for got in (r[kind] for r in two_ranks):
        assert got["sharded"]  # every parameter was a DTensor shard
        assert got["order"] == list(got["expected"])  # the untied LM head included
        assert "lm_head.weight" in got["order"]
        for name, tensor in got["expected"].items():
            assert torch.equal(got["loaded"][name], tensor), name
        assert got["peak_alive"] == 1
    a, b = (r[kind]["loaded"] for r in two_ranks)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_tensor_parallel_pair_pools_its_prompts_and_each_rank_keeps_its_own(two_ranks):
    pooled = [[ord(c) for c in p] for p in PROMPTS[0] + PROMPTS[1]]
    for rank, got in enumerate(r["tp"] for r in two_ranks):
        assert got["seen"] == pooled  # both ranks generate every prompt of the pair
        mine = [[ord(c) for c in p] for p in PROMPTS[rank]]
        assert got["prompt_ids"] == [ids for ids in mine for _ in range(2)]
        assert got["completions"] == [script(ids, j)[0] for ids in mine for j in range(2)]


if __name__ == "__main__":
    _worker(sys.argv[1])
