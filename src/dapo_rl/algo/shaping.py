"""Overlong reward shaping and overlong filtering (DAPO 3.4, arXiv 2503.14476).

Owns `overlong_penalty` (soft overlong punishment, added to the verifier's reward) and
`truncation_mask` (overlong filtering: truncated completions leave the loss). The two
are independent switches. Whether a completion is truncated (no EOS) is decided by the
caller; these functions only take lengths and flags.
"""

import torch
from torch import Tensor


def overlong_penalty(
    lengths: Tensor, *, max_new_tokens: int, buffer: int, penalty: float = 1.0
) -> Tensor:
    """Soft length penalty in the last `buffer` tokens before `max_new_tokens`.

    lengths: completion lengths in tokens, any shape. Returns a float tensor of the same
    shape: 0 for L <= max_new_tokens - buffer, then ((max_new_tokens - buffer) - L) / buffer
    * penalty, reaching -penalty at L = max_new_tokens and held there beyond.
    Example: max_new_tokens=10, buffer=4, penalty=1: L=6 -> 0, L=8 -> -0.5, L=10 -> -1.
    """
    if not 0 < buffer < max_new_tokens:
        raise ValueError(
            f"need 0 < buffer < max_new_tokens, got buffer={buffer}, "
            f"max_new_tokens={max_new_tokens}"
        )
    if penalty < 0:
        raise ValueError(f"penalty must be >= 0, got {penalty}")
    if not lengths.is_floating_point():
        lengths = lengths.to(torch.get_default_dtype())
    expected = max_new_tokens - buffer
    # DAPO 3.4 soft overlong punishment: linear in the buffer, zero before it
    shaped = (expected - lengths) / buffer * penalty
    return shaped.clamp(min=-penalty, max=0.0)


def truncation_mask(mask: Tensor, truncated: Tensor) -> Tensor:
    """Overlong filtering (DAPO 3.4): zero the loss mask of truncated completions.

    mask: (B, T) completion-token mask of any dtype; truncated: (B,) bool.
    Returns a tensor like `mask` with the rows of truncated completions zeroed.
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be (B, T), got shape {tuple(mask.shape)}")
    if truncated.dtype != torch.bool or truncated.shape != mask.shape[:1]:
        raise ValueError(
            f"truncated must be a bool tensor of shape ({mask.shape[0]},), "
            f"got {truncated.dtype} {tuple(truncated.shape)}"
        )
    return torch.where(truncated.unsqueeze(-1), torch.zeros_like(mask), mask)  # (B, T)
