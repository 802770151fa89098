"""Pure GRPO / DAPO tensor math: no I/O, no config objects, no distributed calls.

Each DAPO fix is one function here; the training loop composes them and passes in any
global quantity (such as the token count of a whole mini-batch across ranks).
"""

from dapo_rl.algo.advantages import group_advantages
from dapo_rl.algo.filtering import keep_groups
from dapo_rl.algo.importance import sampler_mismatch, truncated_is_weight
from dapo_rl.algo.losses import (
    aggregate,
    clipped_surrogate,
    kl_estimate,
    loss_denominators,
    policy_ratio,
    token_entropy,
)
from dapo_rl.algo.shaping import overlong_penalty, truncation_mask

__all__ = [
    "aggregate",
    "clipped_surrogate",
    "group_advantages",
    "keep_groups",
    "kl_estimate",
    "loss_denominators",
    "overlong_penalty",
    "policy_ratio",
    "sampler_mismatch",
    "token_entropy",
    "truncated_is_weight",
    "truncation_mask",
]
