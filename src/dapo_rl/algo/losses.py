"""Policy losses: the clipped surrogate, loss aggregation, KL estimators, entropy.

Owns `clipped_surrogate`, `aggregate`, `kl_estimate` and `token_entropy`. Conventions:

- per-token losses are positive-is-worse (to be minimised); shapes are (B, T) with
  `mask` nonzero on completion tokens;
- masked positions never matter: they are selected away with `torch.where`, so even a
  NaN or inf there changes neither the loss nor its gradient;
- global denominators (`num_tokens`, `num_seqs`) are arguments: the training loop counts
  them over the whole optimizer mini-batch (all micro-batches, all ranks), so summing
  the micro-batch losses gives the mini-batch mean exactly;
- a zero count gives a zero loss that stays connected to the graph, never NaN;
- `old_logp`, `ref_logp` and `adv` are constants: callers pass detached tensors;
- every log-ratio is clamped to [-20, 20] before `exp` (`policy_ratio`), and the k3 KL to
  [0, 10], as the verl reference does (`compute_policy_loss`, `kl_penalty`): one token whose
  log-prob moved by 30 would otherwise give a loss of 1e13 (100: inf, then NaN). A clamped
  token has zero gradient through the clamp; the clip already gives it none when it matters.
"""

import torch
from torch import Tensor

AGGREGATION_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
KL_KINDS = ("k1", "k2", "k3")
LOG_RATIO_MAX = 20.0  # |log pi / pi_old| clamp before exp (verl compute_policy_loss)
K3_MAX = 10.0  # k3 KL clamp (verl kl_penalty, low_var_kl)


def policy_ratio(log_ratio: Tensor) -> Tensor:
    """exp(log_ratio) with the log-ratio clamped to [-LOG_RATIO_MAX, LOG_RATIO_MAX], any shape.

    exp(20) = 4.85e8 is finite in every float dtype the trainer uses, so one token that moved
    far cannot make the loss inf or NaN.
    """
    return torch.exp(log_ratio.clamp(-LOG_RATIO_MAX, LOG_RATIO_MAX))


def clipped_surrogate(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    dual_clip: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token PPO clipped-surrogate loss with decoupled clip range.

    logp, old_logp: (B, T) log-probs of the sampled tokens under the current and the
    sampling policy. adv: (B,) broadcast over tokens, or (B, T).
    loss = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A), ratio = exp(logp -
    old_logp). With `dual_clip=c` (c > 1) the loss of A < 0 tokens is capped at c * |A|.

    Returns (loss_tok (B, T), info) where info holds (B, T) bool masks: `clipped_high`
    (A > 0, ratio > 1 + eps_high), `clipped_low` (A < 0, ratio < 1 - eps_low) and
    `dual_clipped` (A < 0 and the dual-clip cap is active). Clipped tokens get zero
    gradient.
    """
    if not 0 <= eps_low < 1:
        raise ValueError(f"eps_low must be in [0, 1), got {eps_low}")
    if eps_high < 0:
        raise ValueError(f"eps_high must be >= 0, got {eps_high}")
    if dual_clip is not None and not dual_clip > 1:
        raise ValueError(f"dual_clip must be None or > 1, got {dual_clip}")
    if old_logp.shape != logp.shape:
        raise ValueError(f"old_logp shape {tuple(old_logp.shape)} != logp {tuple(logp.shape)}")
    if adv.shape == logp.shape[:1] and logp.dim() == 2:
        adv = adv.unsqueeze(-1)  # (B, 1) broadcast over tokens
    elif adv.shape != logp.shape:
        raise ValueError(f"adv must be (B,) or (B, T) = {tuple(logp.shape)}, got {adv.shape}")

    r = policy_ratio(logp - old_logp)  # (B, T)
    # DAPO 3.1 clip-higher: decoupled bounds, eps_high > eps_low leaves room for
    # low-probability tokens to grow
    clipped_ratio = r.clamp(1.0 - eps_low, 1.0 + eps_high)  # (B, T)
    loss = torch.maximum(-adv * r, -adv * clipped_ratio)  # (B, T)

    neg = (adv < 0).expand_as(r)  # (B, T)
    info = {
        "clipped_high": (adv > 0) & (r > 1.0 + eps_high),
        "clipped_low": neg & (r < 1.0 - eps_low),
        "dual_clipped": torch.zeros_like(neg),
    }
    if dual_clip is not None:
        # Dual-clip PPO (Ye et al., arXiv 1912.09729): for A < 0 the objective is
        # max(min(r A, clip(r) A), c A), so the loss is capped at -c A = c |A|
        cap = (-dual_clip * adv).expand_as(loss)  # (B, T)
        info["dual_clipped"] = neg & (loss > cap)
        loss = torch.where(info["dual_clipped"], cap, loss)
    return loss, info


def loss_denominators(mask: Tensor, mode: str) -> Tensor:
    """The counts that turn `aggregate`'s sums into means: (num_tokens, num_seqs), float64.

    mask: (B, T) loss mask of a whole optimizer mini-batch (one rank's share of it: the
    caller sums the counts over ranks). num_tokens counts the loss tokens (DAPO 3.3: every
    token of the mini-batch weighs the same); num_seqs counts the sequences with at least
    one loss token for "seq_mean_token_mean", and every sequence (B) otherwise.
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be (B, T), got shape {tuple(mask.shape)}")
    if mode not in AGGREGATION_MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; valid: {AGGREGATION_MODES}")
    keep = mask.bool()
    seqs = keep.any(dim=-1).sum() if mode == "seq_mean_token_mean" else mask.shape[0]
    return torch.tensor([float(keep.sum()), float(seqs)], dtype=torch.float64)


def _denominator(value: float | Tensor | None, default: Tensor, like: Tensor, name: str) -> Tensor:
    """A count as a tensor on `like`'s device, floored at 1 (a zero count means no tokens)."""
    if value is None:
        value = default
    elif not isinstance(value, Tensor) and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).clamp(min=1)


def aggregate(
    loss_tok: Tensor,
    mask: Tensor,
    mode: str,
    *,
    num_tokens: float | Tensor | None = None,
    norm_len: float | Tensor | None = None,
    num_seqs: float | Tensor | None = None,
) -> Tensor:
    """Reduce per-token losses (B, T) to a scalar.

    mask: (B, T), bool or 0/1, nonzero on completion tokens. Modes:

    - "token_mean": sum(loss * mask) / num_tokens; num_tokens defaults to mask.sum().
      DAPO 3.3 token-level loss when num_tokens counts the whole mini-batch.
    - "seq_mean_token_mean": mean over each sequence's own tokens, summed over sequences
      with >= 1 token and divided by num_seqs (default: the number of such sequences).
      The original GRPO sample-level loss.
    - "seq_mean_token_sum_norm": each sequence's token sum / norm_len (required), summed
      and divided by num_seqs (default: B). Dr. GRPO, arXiv 2503.20783.
    """
    if loss_tok.shape != mask.shape or loss_tok.dim() != 2:
        raise ValueError(
            f"loss_tok and mask must both be (B, T), got {tuple(loss_tok.shape)} "
            f"and {tuple(mask.shape)}"
        )
    keep = mask.bool()  # (B, T)
    masked = torch.where(keep, loss_tok, 0.0)  # (B, T) masked positions cannot leak
    seq_tokens = keep.sum(dim=-1)  # (B,)
    own_tokens, own_seqs = loss_denominators(keep, mode)  # defaults: this batch's counts

    match mode:
        case "token_mean":
            # DAPO 3.3 token-level policy gradient loss
            denom = _denominator(num_tokens, own_tokens, loss_tok, "num_tokens")
            return masked.sum() / denom
        case "seq_mean_token_mean":
            per_seq = masked.sum(dim=-1) / seq_tokens.clamp(min=1)  # (B,) empty rows give 0
            return per_seq.sum() / _denominator(num_seqs, own_seqs, loss_tok, "num_seqs")
        case _:  # seq_mean_token_sum_norm (loss_denominators refused any other mode)
            if norm_len is None:
                raise ValueError("mode 'seq_mean_token_sum_norm' requires norm_len")
            if not isinstance(norm_len, Tensor) and norm_len <= 0:
                raise ValueError(f"norm_len must be > 0, got {norm_len}")
            # Dr. GRPO: a constant length normaliser removes the per-sequence length bias
            per_seq = masked.sum(dim=-1) / norm_len  # (B,)
            return per_seq.sum() / _denominator(num_seqs, own_seqs, loss_tok, "num_seqs")


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: str) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi.

    logp, ref_logp: same shape, e.g. (B, T). Kinds (Schulman, "Approximating KL
    Divergence", 2020), with d = ref_logp - logp:
    "k1": -d (unbiased, can be negative); "k2": d^2 / 2; "k3": exp(d) - d - 1
    (unbiased and >= 0; the GRPO choice, arXiv 2402.03300 eq. 4), computed with d clamped
    to [-20, 20] and the result clamped to [0, K3_MAX = 10], as verl's low_var_kl.
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(f"ref_logp shape {tuple(ref_logp.shape)} != logp {tuple(logp.shape)}")
    d = ref_logp - logp
    match kind:
        case "k1":
            return -d
        case "k2":
            return 0.5 * d.square()
        case "k3":
            # expm1(d) - d is >= 0 in floating point too, and accurate for small d; the
            # clamps bound one far-off token's penalty (and its gradient) as the reference does
            d = d.clamp(-LOG_RATIO_MAX, LOG_RATIO_MAX)
            return (torch.expm1(d) - d).clamp(max=K3_MAX)
        case _:
            raise ValueError(f"unknown KL estimator {kind!r}; valid: {KL_KINDS}")


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) over the last dim, per position.

    logits: (..., V), e.g. (B, T, V). Returns (...), e.g. (B, T). Uses log_softmax
    (logsumexp-based) so large logits do not overflow; -inf logits contribute 0.
    """
    logp = torch.log_softmax(logits, dim=-1)  # (..., V)
    p = logp.exp()  # (..., V)
    # zero-probability entries contribute 0; filling before the product keeps the
    # gradient finite (0 * -inf would be NaN)
    logp = logp.masked_fill(p == 0, 0.0)
    return -(p * logp).sum(dim=-1)  # (...)
