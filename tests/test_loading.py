"""Loading per tensor into an empty (meta) model, whole or FSDP-sharded: the same weights as
``from_pretrained``, in one process and over 2 gloo ranks (rank 0 reads, rank 1 receives)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dapo_rl import dist, models
from dapo_rl.config import build
from dapo_rl.errors import DapoError


def _save(folder: Path, *, tied: bool) -> Path:
    """A tiny random model (tied or untied LM head) saved as a Hugging Face folder."""
    from transformers import AutoModelForCausalLM

    config = models.tiny_config(vocab_size=300, eos_token_id=2, pad_token_id=2)
    config.tie_word_embeddings = tied
    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def _whole(model) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        out[name] = (t.full_tensor() if dist.is_sharded(t) else t).detach().clone()
    return out


@pytest.mark.parametrize("tied", [True, False])
def test_meta_model_loaded_per_tensor_equals_from_pretrained(tmp_path, tied):
    folder = _save(tmp_path / "m", tied=tied)
    want = models.load_model(str(folder))
    model = models.load_model(str(folder), device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    models.load_into(model, str(folder), device="cpu")
    got = _whole(model)
    assert got.keys() == _whole(want).keys()
    for name, t in _whole(want).items():
        assert torch.equal(got[name], t), name
    head, emb = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert (head is emb) == tied
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(model(ids).logits, want(ids).logits)


def test_policy_and_reference_load_through_the_shard_hook():
    cfg = build(overrides={"model.name": "tiny-random", "algo.kl_coef": 0.1})
    seen = []
    model, ref = models.load_policy(cfg, "cpu", shard=lambda m: seen.append(m))
    assert seen == [model, ref]  # each model handed over while still on the meta device
    want = models.load_model("tiny-random", seed=cfg.run.seed)
    for m in (model, ref):
        for name, t in _whole(want).items():
            assert torch.equal(_whole(m)[name], t), name
    assert not any(p.requires_grad for p in ref.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_a_checkpoint_that_lacks_a_tensor_or_has_another_shape_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _save(tmp_path / "m", tied=False)
    state = load_file(folder / "model.safetensors")
    del state["model.norm.weight"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    model = models.load_model(str(folder), device="meta")
    with pytest.raises(DapoError, match="no tensor model.norm.weight"):
        models.load_into(model, str(folder), device="cpu")
    model = models.load_model(str(folder), device="meta")
    with pytest.raises(DapoError, match="shape"):
        models.loading.load_into(model, lambda name: torch.zeros(3), "cpu")
    with pytest.raises(DapoError, match="no safetensors"):
        models.loading.safetensors_reader(tmp_path)


# ---------------------------------------------------------------- two gloo ranks


def _worker(folder: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_from_env()
    model = models.load_model(folder, device="meta")
    dist.shard_model(model)  # FSDP2 on the meta model: each rank allocates its shards only
    local = sum(
        p.to_local().numel() for p in model.get_decoder().layers.parameters() if dist.is_sharded(p)
    )
    models.load_into(model, folder, device="cpu")
    torch.save({"params": _whole(model), "local": local}, Path(out_dir) / f"rank{dist.rank()}.pt")
    torch.distributed.destroy_process_group()


def test_two_ranks_load_their_shards_from_rank_0(tmp_path):
    folder = _save(tmp_path / "m", tied=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*cmd, __file__, str(folder), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    want = _whole(models.load_model(str(folder)))
    layer_params = sum(
        p.numel() for p in models.load_model(str(folder)).get_decoder().layers.parameters()
    )
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        assert got["params"].keys() == want.keys()
        for name, t in want.items():
            assert torch.equal(got["params"][name], t), (r, name)
        assert got["local"] <= layer_params // 2 + 64  # a half of each layer (+ padding)


if __name__ == "__main__":  # a rank of the two-process test
    _worker(sys.argv[1], sys.argv[2])
