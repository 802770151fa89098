"""Splitting a mini-batch into micro-batches, each aggregated with the global counts,
gives the same gradient as one pass over the whole mini-batch (DAPO 3.3 token-level
loss across gradient accumulation)."""

import pytest
import torch

from dapo_rl.algo import aggregate, clipped_surrogate

B, T, NORM_LEN = 6, 7, 7
MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    logp = torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3 - 1.0
    old_logp = logp + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]  # (B, T) varying lengths
    mask[1] = False  # all-zero rows, e.g. filtered overlong completions
    mask[4] = False
    return logp, old_logp, adv, mask


def _grad(logp, old_logp, adv, mask, mode, sizes, global_counts):
    lp = logp.clone().requires_grad_()
    counts = {
        "num_tokens": mask.sum(),
        "num_seqs": B if mode == "seq_mean_token_sum_norm" else (mask.sum(-1) > 0).sum(),
    }
    total = torch.zeros((), dtype=torch.float64)
    for idx in torch.arange(B).split(sizes):
        loss_tok, _ = clipped_surrogate(lp[idx], old_logp[idx], adv[idx], dual_clip=3.0)
        kw = counts if global_counts else {}
        out = aggregate(loss_tok, mask[idx], mode, norm_len=NORM_LEN, **kw)
        out.backward()
        total = total + out.detach()
    return total, lp.grad


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sizes", [[3, 3], [2, 2, 2], [1, 4, 1]])
@pytest.mark.parametrize("mode", MODES)
def test_microbatch_gradient_matches_single_batch(mode, sizes, seed):
    logp, old_logp, adv, mask = _batch(seed)
    full_loss, full_grad = _grad(logp, old_logp, adv, mask, mode, [B], global_counts=False)
    loss, grad = _grad(logp, old_logp, adv, mask, mode, sizes, global_counts=True)
    assert torch.allclose(loss, full_loss)
    assert torch.allclose(grad, full_grad)
    assert full_grad.abs().sum() > 0
    assert (full_grad[~mask] == 0).all()


@pytest.mark.parametrize("mode", MODES)
def test_local_counts_do_not_match(mode):
    # control: micro-batches normalised by their own counts give a different gradient,
    # so the test above is sensitive to the denominators
    logp, old_logp, adv, mask = _batch(0)
    _, full_grad = _grad(logp, old_logp, adv, mask, mode, [B], global_counts=False)
    _, grad = _grad(logp, old_logp, adv, mask, mode, [2, 2, 2], global_counts=False)
    assert not torch.allclose(grad, full_grad)
