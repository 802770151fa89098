"""Data parallelism: the helpers in a world of 1, and a 2-process gloo run on the CPU.

The two-process tests run this file under ``torchrun --standalone --nproc_per_node 2`` once
per module (``_worker``). Each rank takes its share of a fixed rollout (whole groups,
uneven token and sequence counts), makes one SGD step per loss-aggregation mode, runs
``collect`` with a scripted engine, and saves what it got; the test process compares the
step with one process on the whole batch. SGD with lr 1 moves each weight by exactly minus
its gradient, so any normalisation error shows in the weights.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from untied_model import untied_model

from dapo_rl import dist
from dapo_rl.rollout import Rollout
from dapo_rl.train.update import UpdateSettings, batched_logprobs, policy_update

G = 4
MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
# completion lengths by group: the first (rank 0's share of 3 groups) is long, the others
# short, so the ranks hold 45 and 26 tokens in 4 and 8 sequences
LENGTHS = ((12, 11, 12, 10), (3, 2, 4, 5), (2, 6, 3, 1))
PROMPT_LENGTHS = (5, 7, 6)
EMPTY_ROW = 9  # its loss mask is all zero: per-sequence modes must not count it


# ---------------------------------------------------------------- helpers in a world of 1


def test_a_world_of_one_needs_no_process_group():
    assert not dist.initialized()
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    assert dist.all_reduce(3) == 3 and isinstance(dist.all_reduce(3), int)
    t = torch.tensor([1.0, 2.0])
    assert dist.all_reduce(t, "mean") is t
    assert dist.all_gather_object({"a": 1}) == [{"a": 1}]
    assert dist.pool([1, 2]) == [1, 2]
    assert dist.shard([1, 2, 3]) == [1, 2, 3]
    assert dist.round_up(5) == 5
    g = torch.Generator()
    assert dist.rank_generator(g) is g
    with pytest.raises(ValueError):
        dist.all_reduce(1.0, "prod")


def test_init_from_env_without_torchrun_stays_single(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    device = dist.init_from_env()
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not dist.initialized()


def test_shares_are_contiguous_cover_everything_and_differ_by_at_most_one():
    for n, world in [(3, 2), (8, 3), (2, 4), (0, 2)]:
        bounds = [dist.share_bounds(n, r, world) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
        sizes = [stop - start for start, stop in bounds]
        assert max(sizes) - min(sizes) <= 1
    assert dist.share_bounds(3, 0, 2) == (0, 1) and dist.share_bounds(3, 1, 2) == (1, 3)


def test_merge_stats_concatenates_tensors_sums_counts_and_maxes_times():
    parts = [
        {"acc": torch.tensor([1.0]), "groups": 2, "gen_time": 1.5, "timeout": 1},
        {"acc": torch.tensor([0.0, 1.0]), "groups": 3, "gen_time": 2.0, "error": 1},
    ]
    out = dist.merge_stats(parts, max_keys=("gen_time",))
    assert out["acc"].tolist() == [1.0, 0.0, 1.0]
    assert out["groups"] == 5 and out["gen_time"] == 2.0
    assert out["timeout"] == 1 and out["error"] == 1  # a key one rank lacks counts as absent


def test_sum_gradients_is_a_no_op_in_a_world_of_one():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    dist.sum_gradients([p])
    assert p.grad.tolist() == [2.0, 2.0, 2.0]


# ---------------------------------------------------------------- the fixed rollout


def _rollout() -> Rollout:
    """Three groups of G, each with one prompt; completions right-padded, no EOS needed."""
    g = torch.Generator().manual_seed(5)
    tp, tc = max(PROMPT_LENGTHS), max(max(x) for x in LENGTHS)
    rows = len(LENGTHS) * G
    prompt_ids, prompt_mask = torch.zeros(rows, tp, dtype=torch.long), torch.zeros(rows, tp)
    ids, mask = torch.zeros(rows, tc, dtype=torch.long), torch.zeros(rows, tc)
    for k, (plen, lens) in enumerate(zip(PROMPT_LENGTHS, LENGTHS, strict=True)):
        prompt = torch.randint(10, 1000, (plen,), generator=g)
        for j, n in enumerate(lens):
            i = k * G + j
            prompt_ids[i, tp - plen :], prompt_mask[i, tp - plen :] = prompt, 1
            ids[i, :n], mask[i, :n] = torch.randint(10, 1000, (n,), generator=g), 1
    lengths = mask.sum(1).long()
    return Rollout(
        prompt_ids,
        prompt_mask.long(),
        ids,
        mask.long(),
        torch.zeros(rows, tc),
        lengths,
        lengths == tc,
    )


def _settings(mode: str) -> UpdateSettings:
    return UpdateSettings(
        eps_low=0.2,
        eps_high=0.28,
        dual_clip=None,
        loss_agg=mode,
        norm_len=12,
        kl_coef=0.0,
        kl_kind="k3",
        temperature=1.0,
        mini_batches=1,
        micro_batch_size=G,  # several micro-batches per rank as well
        max_grad_norm=1e9,  # no clipping: the step is exactly -grad
        group_size=G,
    )


def _model():
    from dapo_rl.models import load_model

    return load_model("tiny-random", seed=0)


def _inputs() -> dict:
    """Rollout, perturbed old log-probs (so both clip sides bind), advantages, loss mask."""
    ro = _rollout()
    old = batched_logprobs(_model(), ro, _settings("token_mean"))
    noise = torch.randn(old.shape, generator=torch.Generator().manual_seed(0))
    old = old + 0.3 * noise * ro.mask
    ro.logp = old.clone()  # the sampler's log-probs: the same policy
    loss_mask = ro.mask.clone()
    loss_mask[EMPTY_ROW] = 0
    adv = torch.randn(len(ro), generator=torch.Generator().manual_seed(1))
    return {"rollout": ro, "old": old, "adv": adv, "loss_mask": loss_mask}


def _flat(model) -> torch.Tensor:
    """Every parameter, whole (an FSDP2 shard is gathered: collective), in one vector."""
    full = [p.full_tensor() if dist.is_sharded(p) else p for p in model.parameters()]
    return torch.cat([p.detach().flatten() for p in full])


def _sgd_step(model, data: dict, rows, mode: str, *, fsdp: bool | dict = False, max_norm=1e9):
    """One SGD step (lr 1) of ``policy_update`` on ``rows`` of the fixed rollout.

    ``fsdp``: shard the model first (a dict: ``shard_model``'s keyword arguments)."""
    model = copy.deepcopy(model)
    if fsdp:
        dist.shard_model(model, **(fsdp if isinstance(fsdp, dict) else {}))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    metrics = policy_update(
        model,
        opt,
        sched,
        data["rollout"].select(rows),
        adv=data["adv"][rows],
        old_logp=data["old"][rows],
        loss_mask=data["loss_mask"][rows],
        ref_logp=None,
        s=dataclasses.replace(_settings(mode), max_grad_norm=max_norm),
        generator=torch.Generator().manual_seed(0),
    )
    if fsdp:  # after the update every FSDP module holds only its shard again
        metrics["unsharded_params"] = sum(not dist.is_sharded(p) for p in model.parameters())
        metrics["param_dtypes"] = sorted({str(p.dtype) for p in model.parameters()})
    return _flat(model), metrics


def _unsharded_after_forwards(base, data: dict) -> dict[str, int]:
    """Parameters held whole (not as FSDP2 shards) after each kind of no-grad forward."""
    model = copy.deepcopy(base)
    dist.shard_model(model)

    def whole() -> int:
        return sum(not dist.is_sharded(p) for p in model.parameters())

    out = {"sharded": whole()}
    with torch.no_grad():
        model(input_ids=data["rollout"].completion_ids[:2])  # the root's own forward
    out["after root forward"] = whole()  # reshard_after_forward, the root included
    model.unshard()  # the root's weights gathered, as an interrupted forward leaves them
    out["after unshard"] = whole()
    dist.reshard(model)
    out["after reshard"] = whole()
    batched_logprobs(model, data["rollout"].select(slice(0, G)), _settings("token_mean"))
    out["after batched_logprobs"] = whole()
    return out


def _rank_rows(rank: int, world: int) -> slice:
    start, stop = dist.share_bounds(len(LENGTHS), rank, world)
    return slice(start * G, stop * G)


# ---------------------------------------------------------------- collect with a script


class _ScriptedEngine:
    """'easy' all right, 'hard' all wrong, 'mixed' right on even rows; token 1 = right."""

    pad_id = 0

    def generate(self, prompts, *, n, max_new_tokens, **_):
        right = ["easy" in p or ("mixed" in p and j % 2 == 0) for p in prompts for j in range(n)]
        ids = torch.tensor([[1 if r else 2, 3] for r in right])
        ones = torch.ones(len(right), 1, dtype=torch.long)
        return Rollout(
            ones,
            ones,
            ids,
            torch.ones_like(ids),
            torch.zeros(ids.shape),
            torch.full((len(right),), 2),
            torch.zeros(len(right), dtype=torch.bool),
        )


def _collect_state():
    from dapo_rl.config import build
    from dapo_rl.data.files import Example
    from dapo_rl.data.stream import PromptStream
    from dapo_rl.rewards import Verdict
    from dapo_rl.train.picker import PickerSettings, PromptPicker

    problems = ["mixed 0", "easy", "hard", "hard", "mixed 1", "easy", "mixed 2", "mixed 3"]
    tok = SimpleNamespace(
        chat_template=None,
        batch_decode=lambda seqs, **_: ["right" if int(s[0]) == 1 else "wrong" for s in seqs],
    )
    cfg = build(
        overrides={
            "rollout.group_size": 2,
            "rollout.prompts_per_step": 3,
            "rollout.max_new_tokens": 8,
            "algo.overlong_buffer": 4,
            "algo.oversample": False,
            "algo.carry_over": True,
        }
    )
    stream = PromptStream([Example(p, "x", str(i)) for i, p in enumerate(problems)], seed=0)
    stream._at = lambda i: Example(problems[i % len(problems)], "x", str(i))  # fixed order
    return SimpleNamespace(
        cfg=cfg,
        stream=stream,
        tokenizer=tok,
        engine=_ScriptedEngine(),
        verifier=lambda text, ref: Verdict(1.0 if text == "right" else -1.0, text == "right"),
        generator=torch.Generator().manual_seed(0),
        picker=PromptPicker(PickerSettings.from_config(cfg), seed=0),
    )


# ---------------------------------------------------------------- the two-process run


def _fsdp_checkpoint_round_trip(base, run_dir: Path) -> dict:
    """Save a sharded model and AdamW after one step, load it into a fresh sharded copy."""
    from dapo_rl.train import checkpoint

    def state_of(model):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        tok = SimpleNamespace(save_pretrained=lambda path: None)
        stream = SimpleNamespace(state_dict=lambda: {}, load_state_dict=lambda _: None)
        from dapo_rl.config import build
        from dapo_rl.train.picker import PickerSettings, PromptPicker

        cfg = build(overrides={"model.name": "tiny-random"})
        return SimpleNamespace(
            model=model,
            optimizer=opt,
            scheduler=sched,
            tokenizer=tok,
            stream=stream,
            generator=torch.Generator(),
            step=1,
            picker=PromptPicker(PickerSettings.from_config(cfg), seed=0),
            skipped_in_a_row=0,
            cfg=cfg,
        )

    model = copy.deepcopy(base)
    dist.shard_model(model)
    saved = state_of(model)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    saved.optimizer.step()
    path = checkpoint.save(run_dir, saved, keep=2)
    dist.barrier()
    fresh = copy.deepcopy(base)
    dist.shard_model(fresh)
    loaded = state_of(fresh)
    checkpoint._restore(path, loaded)
    avg = [v["exp_avg"] for v in loaded.optimizer.state.values()]
    head = model.get_output_embeddings().weight
    head = head.full_tensor() if dist.is_sharded(head) else head
    return {
        "head_moved": float((head - base.get_output_embeddings().weight).abs().max()),
        "saved": _flat(model),
        "loaded": _flat(fresh),
        "exp_avg_local": float(
            sum(a.to_local().abs().sum() if dist.is_sharded(a) else 0 for a in avg)
        ),
    }


def _worker(inp: str, out_dir: str) -> None:
    from dapo_rl.train.step import collect

    torch.set_num_threads(1)
    dist.init_from_env()
    rank, world = dist.rank(), dist.world_size()
    data = torch.load(inp, weights_only=False)  # safe: written by this test
    base = _model()
    rows = _rank_rows(rank, world)
    result = {"modes": {}}
    for mode in MODES:
        params, metrics = _sgd_step(base, data, rows, mode)
        result["modes"][mode] = {"params": params, "metrics": metrics}
        params, metrics = _sgd_step(base, data, rows, mode, fsdp=True)
        result["modes"][f"fsdp {mode}"] = {"params": params, "metrics": metrics}
    result["fsdp clipped"] = _sgd_step(base, data, rows, "token_mean", fsdp=True, max_norm=0.5)
    untied = untied_model()
    result["untied"] = _sgd_step(untied, data, rows, "token_mean")
    result["fsdp untied"] = _sgd_step(untied, data, rows, "token_mean", fsdp=True)
    result["fsdp bf16"] = _sgd_step(base, data, rows, "token_mean", fsdp={"bf16": True})
    result["fsdp offload"] = _sgd_step(base, data, rows, "token_mean", fsdp={"cpu_offload": True})
    result["unsharded"] = _unsharded_after_forwards(base, data)
    result["fsdp checkpoint"] = _fsdp_checkpoint_round_trip(base, Path(out_dir) / "ckpt")
    result["fsdp checkpoint untied"] = _fsdp_checkpoint_round_trip(
        untied_model(), Path(out_dir) / "ckpt_untied"
    )
    result["signal"] = dist.agreed_signal(15 if rank == 1 else None)  # SIGTERM on rank 1
    state = _collect_state()
    for key in ("collect", "next_step"):  # the second step starts with the carried group
        col = collect(state)
        picker = state.picker.state_dict()
        result[key] = {
            "rows": len(col.batch),
            "acc": col.acc,
            "position": state.stream.position,
            "stats": {k: v for k, v in vars(col.stats).items() if "time" not in k},
            "picker": {k: v for k, v in picker.items() if k != "carried"},
            "carried_groups": picker["carried"][2],
        }
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    data = _inputs()
    torch.save(data, tmp / "inputs.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*cmd, __file__, str(tmp / "inputs.pt"), str(tmp)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]  # safe: ours
    return data, ranks


@pytest.mark.parametrize("mode", MODES)
def test_two_ranks_take_the_same_step_as_one_process_on_the_global_batch(two_ranks, mode):
    data, ranks = two_ranks
    base = _model()
    whole, metrics = _sgd_step(base, data, slice(None), mode)
    moved = float(
        (whole - torch.cat([p.detach().flatten() for p in base.parameters()])).abs().max()
    )
    assert moved > 1e-3
    for r in ranks:
        got = r["modes"][mode]
        assert torch.allclose(got["params"], whole, atol=1e-6, rtol=1e-5)
        for key in ("loss/policy", "clip/high_frac", "clip/low_frac", "entropy/mean"):
            assert got["metrics"][key] == pytest.approx(metrics[key], rel=1e-5, abs=1e-7)
        assert got["metrics"]["throughput/train_tokens"] == metrics["throughput/train_tokens"]
    assert metrics["clip/high_frac"] > 0 or metrics["clip/low_frac"] > 0


@pytest.mark.parametrize("mode", MODES)
def test_fsdp_two_ranks_take_the_same_step_as_one_process(two_ranks, mode):
    # each decoder layer sharded over the two ranks (FSDP2 on gloo): the same SGD step
    data, ranks = two_ranks
    whole, metrics = _sgd_step(_model(), data, slice(None), mode)
    for r in ranks:
        got = r["modes"][f"fsdp {mode}"]
        assert torch.allclose(got["params"], whole, atol=1e-6, rtol=1e-5)
        assert got["metrics"]["loss/policy"] == pytest.approx(metrics["loss/policy"], rel=1e-5)


def test_fsdp_shards_the_root_too_and_leaves_every_parameter_sharded_after_the_update(
    two_ranks,
):
    _, ranks = two_ranks
    for r in ranks:
        for mode in MODES:
            assert r["modes"][f"fsdp {mode}"]["metrics"]["unsharded_params"] == 0
        got = r["unsharded"]
        assert got["sharded"] == 0 and got["after root forward"] == 0
        assert got["after unshard"] == 2  # embeddings (tied to the head) and the final norm
        assert got["after reshard"] == 0 and got["after batched_logprobs"] == 0


def test_fsdp_untied_head_takes_the_same_step_as_one_process(two_ranks):
    data, ranks = two_ranks
    whole, metrics = _sgd_step(untied_model(), data, slice(None), "token_mean")
    for r in ranks:
        params, got = r["fsdp untied"]
        assert torch.allclose(params, whole, atol=1e-6, rtol=1e-5)
        assert got["loss/policy"] == pytest.approx(metrics["loss/policy"], rel=1e-5)
        assert torch.allclose(r["untied"][0], whole, atol=1e-6, rtol=1e-5)  # whole-model DP


def test_fsdp_cpu_offload_takes_the_same_step(two_ranks):
    data, ranks = two_ranks
    whole, _ = _sgd_step(_model(), data, slice(None), "token_mean")
    for r in ranks:
        params, got = r["fsdp offload"]
        assert torch.allclose(params, whole, atol=1e-6, rtol=1e-5)
        assert got["unsharded_params"] == 0


def test_fsdp_bf16_computes_in_bf16_keeps_float32_master_weights_and_a_close_step(two_ranks):
    data, ranks = two_ranks
    base = _model()
    start = torch.cat([p.detach().flatten() for p in base.parameters()])
    whole, _ = _sgd_step(base, data, slice(None), "token_mean")
    for r in ranks:
        params, got = r["fsdp bf16"]
        assert got["param_dtypes"] == ["torch.float32"]  # master weights (what AdamW steps)
        assert params.dtype == torch.float32
        step, want = params - start, whole - start
        err = float((step - want).norm() / want.norm())
        assert 0 < err < 0.05, err  # bf16 compute: close to the float32 step, not equal


def test_fsdp_gradient_clipping_counts_sharded_and_whole_gradients_once(two_ranks):
    data, ranks = two_ranks
    whole, metrics = _sgd_step(_model(), data, slice(None), "token_mean", max_norm=0.5)
    assert metrics["grad/norm"] > 0.5  # the clip binds
    for r in ranks:
        params, got = r["fsdp clipped"]
        assert got["grad/norm"] == pytest.approx(metrics["grad/norm"], rel=1e-4)  # float order
        assert torch.allclose(params, whole, atol=1e-6, rtol=1e-5)


def test_fsdp_sharded_checkpoint_loads_into_a_fresh_sharded_model_with_its_adamw_state(two_ranks):
    _, ranks = two_ranks
    for r in ranks:
        got = r["fsdp checkpoint"]
        assert torch.equal(got["loaded"], got["saved"])
        assert got["exp_avg_local"] > 0  # the AdamW moments came back, sharded
    assert torch.equal(ranks[0]["fsdp checkpoint"]["saved"], ranks[1]["fsdp checkpoint"]["saved"])


def test_fsdp_checkpoint_keeps_an_untied_lm_head(two_ranks):
    # regression: the FSDP save assumed a tied head and dropped lm_head.weight, so a resumed
    # Qwen2.5-7B- or Llama-3-style model came back with its initial head
    _, ranks = two_ranks
    for r in ranks:
        got = r["fsdp checkpoint untied"]
        assert torch.equal(got["loaded"], got["saved"])
        assert got["head_moved"] > 0  # the step moved the head, so a lost head shows


def test_a_signal_on_one_rank_stops_every_rank(two_ranks):
    _, ranks = two_ranks
    assert [r["signal"] for r in ranks] == [15, 15]


@pytest.mark.parametrize("mode", MODES)
def test_negative_control_per_rank_normalisation_gives_a_different_step(two_ranks, mode):
    # what DDP gives with each rank normalising by its own counts: the mean of the ranks'
    # per-shard steps. The shards hold 45 vs 26 tokens and 4 vs 8 sequences (7 with tokens).
    data, _ = two_ranks
    base = _model()
    start = torch.cat([p.detach().flatten() for p in base.parameters()])
    whole, _ = _sgd_step(base, data, slice(None), mode)
    deltas = [_sgd_step(base, data, _rank_rows(r, 2), mode)[0] - start for r in range(2)]
    naive = start + (deltas[0] + deltas[1]) / 2
    assert float((naive - whole).abs().max()) > 100 * 1e-6


def test_two_ranks_collect_consistently_and_split_the_kept_groups(two_ranks):
    _, ranks = two_ranks
    a, b = (r["collect"] for r in ranks)
    want, group = 3, 2
    # the refill loop stops when the kept groups of both ranks reach prompts_per_step;
    # the kept groups are dealt out as 1 + 2 whole groups
    assert a["rows"] + b["rows"] == want * group
    assert sorted([a["rows"], b["rows"]]) == [group, 2 * group]
    for r in (a, b):
        assert (r["acc"].view(-1, group).sum(1) == 1).all()  # informative groups only
    assert a["position"] == b["position"]  # the stream is read in step on every rank
    assert a["stats"].keys() == b["stats"].keys()
    for key, value in a["stats"].items():
        other = b["stats"][key]
        same = torch.equal(value, other) if torch.is_tensor(value) else value == other
        assert same, key
    assert a["stats"]["kept_groups"] == want


def test_two_ranks_carry_the_same_surplus_and_keep_the_same_picker_state(two_ranks):
    _, ranks = two_ranks
    a, b = (r["collect"] for r in ranks)
    # rounds ask for 4, 2 and 2 prompts (rounded up to the world) and keep 1 + 1 + 2
    # groups: one more than the 3 wanted, which both ranks carry
    assert a["carried_groups"] == b["carried_groups"] == 1
    assert a["picker"] == b["picker"]
    # every sampled group is in the history, whichever rank sampled it
    assert len(a["picker"]["history"]) == 6  # mixed 0-3, easy, hard
    assert a["picker"]["history"]["hard"] == (2, [0.0, 0.0], 0, 2)
    a, b = (r["next_step"] for r in ranks)
    # the next step needs 2 new groups: rounds of 2 prompts keep 1, 0, 1
    assert a["stats"]["picker"]["ds/carried_groups"] == 1
    assert a["stats"]["groups"] == 6 and a["stats"]["kept_groups"] == 3
    assert a["rows"] + b["rows"] == 3 * 2
    for key, value in a["stats"].items():
        other = b["stats"][key]
        same = torch.equal(value, other) if torch.is_tensor(value) else value == other
        assert same, key
    assert a["picker"] == b["picker"] and a["carried_groups"] == b["carried_groups"] == 0


if __name__ == "__main__":  # a rank of the two-process run (see the ``two_ranks`` fixture)
    _worker(sys.argv[1], sys.argv[2])
