"""Truncated importance sampling for the sampler/trainer probability mismatch.

A separate inference engine (vLLM) samples with other kernels and precision than the
trainer, so a completion's tokens come from pi_sampler, not from the trainer's pi_old.
The policy-gradient loss of each token is reweighted by
w = min(pi_old / pi_sampler, C) = min(exp(train_logp - sampler_logp), C), a constant
(no gradient flows through it); the cap C bounds the variance. This is truncated
importance sampling as in Yao et al., "Your Efficient RL Framework Secretly Brings You
Off-Policy RL Training" (2025), and IMPALA's truncated weights (arXiv 1802.01561).
"""

import torch
from torch import Tensor

from dapo_rl.algo.losses import kl_estimate, policy_ratio


def truncated_is_weight(train_logp: Tensor, sampler_logp: Tensor, *, cap: float) -> Tensor:
    """Per-token weight min(exp(train_logp - sampler_logp), cap), detached. Shapes (B, T).

    train_logp: the trainer's log-probs of the sampled tokens before the update (old
    log-probs); sampler_logp: the inference engine's log-probs of the same tokens.
    """
    if not cap > 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    if train_logp.shape != sampler_logp.shape:
        raise ValueError(
            f"sampler_logp shape {tuple(sampler_logp.shape)} != train_logp "
            f"{tuple(train_logp.shape)}"
        )
    # the log-ratio is clamped before exp, like the surrogate's (`losses.policy_ratio`)
    return policy_ratio(train_logp.detach() - sampler_logp.detach()).clamp(max=cap)  # (B, T)


def sampler_mismatch(
    train_logp: Tensor, sampler_logp: Tensor, *, cap: float | None = None
) -> dict[str, Tensor]:
    """Per-token measures of the sampler/trainer mismatch, shapes (B, T), no reduction.

    - ``kl``: k3 estimate of KL(pi_sampler || pi_trainer) from the sampled tokens,
      exp(d) - d - 1 with d = train_logp - sampler_logp (>= 0, 0 when they agree; clamped
      to at most 10 like every k3 value, ``losses.kl_estimate``);
    - ``out_of_range`` (only with ``cap``): whether the ratio exp(d) lies outside
      [1 / cap, cap].
    """
    d_logp, s_logp = train_logp.detach(), sampler_logp.detach()
    out = {"kl": kl_estimate(s_logp, d_logp, "k3")}
    if cap is not None:
        log_cap = torch.log(torch.as_tensor(float(cap)))
        out["out_of_range"] = (d_logp - s_logp).abs() > log_cap
    return out
