"""Dynamic-sampling predicate (DAPO 3.2, arXiv 2503.14476).

Owns `keep_groups`. A group whose completions are all correct or all wrong has zero
advantage for every completion and so contributes no policy gradient; DAPO drops such
groups and refills the batch. The predicate is applied to raw correctness (`acc`),
never to the shaped reward: with overlong shaping, an all-wrong group of different
lengths would otherwise survive and reward short wrong answers.
"""

from torch import Tensor


def keep_groups(acc: Tensor, group_size: int) -> Tensor:
    """True for each group whose accuracies are not all equal.

    acc: (N,) bool or float, N = num_groups * group_size, groups contiguous.
    Returns a bool tensor (num_groups,). With group_size == 1 every group is dropped.
    """
    if acc.dim() != 1:
        raise ValueError(f"acc must be 1-D (N,), got shape {tuple(acc.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if acc.numel() % group_size != 0:
        raise ValueError(
            f"number of accuracies ({acc.numel()}) is not divisible by group_size ({group_size})"
        )
    a = acc.reshape(-1, group_size)  # (num_groups, G)
    return (a != a[:, :1]).any(dim=1)  # (num_groups,) DAPO 3.2 dynamic sampling
