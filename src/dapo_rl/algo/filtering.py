"""Dynamic-sampling predicate (DAPO 3.2, arXiv 2503.14476).

Owns `keep_groups` and the names of what it may filter on (`FILTER_METRICS`). A group
whose completions all got the same value has zero advantage for every completion and so
contributes no policy gradient; DAPO drops such groups and refills the batch. The value is
raw correctness (`acc`) by default, or the verifier's score before overlong shaping
(`score`, the reference's `filter_groups.metric`) for partial-credit rewards, where every
completion may be "correct" (score > 0) while the scores still differ. Never the shaped
reward: with overlong shaping, an all-wrong group of different lengths would otherwise
survive and reward short wrong answers.
"""

from torch import Tensor

FILTER_METRICS = ("acc", "score")  # algo.filter_metric


def keep_groups(values: Tensor, group_size: int) -> Tensor:
    """True for each group whose values (acc or score) are not all equal.

    values: (N,) bool or float, N = num_groups * group_size, groups contiguous.
    Returns a bool tensor (num_groups,). With group_size == 1 every group is dropped.
    """
    if values.dim() != 1:
        raise ValueError(f"values must be 1-D (N,), got shape {tuple(values.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if values.numel() % group_size != 0:
        raise ValueError(
            f"number of values ({values.numel()}) is not divisible by group_size ({group_size})"
        )
    v = values.reshape(-1, group_size)  # (num_groups, G)
    return (v != v[:, :1]).any(dim=1)  # (num_groups,) DAPO 3.2 dynamic sampling
