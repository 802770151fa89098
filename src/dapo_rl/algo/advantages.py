"""Group-relative advantages (GRPO, arXiv 2402.03300, section 4.1.2).

Owns `group_advantages`. Conventions pinned here (they match the DAPO reference):

- groups are contiguous: rewards[g * G:(g + 1) * G] are the G completions of prompt g;
- the std is Bessel-corrected (divides by G - 1);
- eps is added to the std, not to the variance (default 1e-6);
- a group whose rewards are all equal gets exactly zero advantage. This is decided by
  equality rather than by the computed std, so float rounding in the group mean cannot
  leak a tiny nonzero value that 1 / eps would then amplify.
"""

import torch
from torch import Tensor


def group_advantages(
    rewards: Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-6
) -> Tensor:
    """Advantage of each completion relative to its group.

    rewards: (N,) with N = num_groups * group_size, groups contiguous.
    Returns (N,): (r - mean_g) / (std_g + eps) when `scale`, else r - mean_g
    (the unscaled form is Dr. GRPO, arXiv 2503.20783).
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if rewards.numel() % group_size != 0:
        raise ValueError(
            f"number of rewards ({rewards.numel()}) is not divisible by group_size ({group_size})"
        )
    if scale and group_size < 2:
        raise ValueError("scale=True needs group_size >= 2 (the group std is undefined for G=1)")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())

    r = rewards.reshape(-1, group_size)  # (num_groups, G)
    centered = r - r.mean(dim=1, keepdim=True)  # (num_groups, G)
    constant = (r == r[:, :1]).all(dim=1, keepdim=True)  # (num_groups, 1)
    centered = centered.masked_fill(constant, 0.0)
    if scale:
        std = r.std(dim=1, keepdim=True, correction=1)  # (num_groups, 1) Bessel-corrected
        centered = centered / (std + eps)
    return centered.reshape(-1)  # (N,)
