"""Mixed precision without autocast: float32 master weights and a bfloat16 working copy.

Owns the precision of the weights in a single-process run (``model.dtype=bfloat16``; FSDP
runs use FSDP2's ``MixedPrecisionPolicy`` instead). The trained model, ``master``, keeps
float32 weights, float32 gradients and float32 AdamW state, and is what checkpoints save.
``working`` is a bfloat16 copy of its parameters; every forward and backward runs on it:
sampling, evaluation, old and reference log-probs, and the training pass. Choices:

- The copy is refreshed once per optimizer step (a post-hook on the optimizer's ``step``),
  never per call. CPU autocast casts every weight on every call, which while decoding is
  the whole model once per token; here a decode step reads bf16 weights as they are
  (DESIGN.md 14: a weight cast happens once per optimizer step).
- Gradients leave the copy as soon as backward has accumulated one for a parameter (a
  post-accumulate-grad hook) and are added into the master's float32 ``.grad``: the
  micro-batches of a mini-batch accumulate in float32, the copy never holds a gradient,
  and clipping and AdamW see float32 gradients of float32 weights (Micikevicius et al.,
  "Mixed Precision Training", arXiv 1710.03740, with bf16 needing no loss scaling).
- Only parameters are cast: buffers (the rotary inverse frequencies) stay float32.
- The LM head runs in bf16; its logits are cast to float32 before any log-softmax
  (``train/update.py``, ``rollout/engine.py``), so log-probs, the ratio, the loss and
  every reduction are float32.
- Frozen parameters (a LoRA run's base weights) are cast once and never copied again; the
  adapter's master stays float32. The reference policy of a LoRA run is the working copy
  with its adapter off; a separate reference model is frozen, so it is cast in place.

With ``float32`` there is no copy: ``working`` is ``master`` and nothing is hooked.
"""

from __future__ import annotations

import copy

import torch

from dapo_rl.models import AdapterDisabled


def cast_parameters(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast ``model``'s floating-point parameters to ``dtype`` in place; buffers keep theirs."""
    for p in model.parameters():  # shared (tied) parameters are listed once
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    return model


def _into_master(master: torch.nn.Parameter):
    def hook(work: torch.Tensor) -> None:
        grad, work.grad = work.grad, None
        if master.grad is None:
            master.grad = grad.to(master.dtype)
        else:
            master.grad.add_(grad)

    return hook


class Precision:
    """The master model and the working copy that computes (``working is master`` in fp32)."""

    def __init__(self, master: torch.nn.Module, dtype: torch.dtype = torch.float32):
        self.master = master
        self.dtype = dtype
        self.refreshes = 0  # copies of the master into the working copy since creation
        self._pairs: list[tuple[torch.Tensor, torch.nn.Parameter]] = []
        if dtype == torch.float32:
            self.working = master
            return
        self.working = cast_parameters(copy.deepcopy(master), dtype)
        work = dict(self.working.named_parameters())
        for name, m in master.named_parameters():
            if m.requires_grad:
                self._pairs.append((work[name], m))
                work[name].register_post_accumulate_grad_hook(_into_master(m))

    @classmethod
    def for_run(cls, cfg, master: torch.nn.Module) -> Precision:
        """The precision ``cfg`` asks for; FSDP runs keep one model (FSDP2 casts)."""
        bf16 = cfg.model.dtype == "bfloat16" and not cfg.train.fsdp
        return cls(master, torch.bfloat16 if bf16 else torch.float32)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Refresh the working copy after every step ``optimizer`` takes (a skipped step,
        which never calls ``step``, leaves both unchanged)."""
        if self._pairs:
            optimizer.register_step_post_hook(lambda *_: self.refresh())

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the master's trainable weights into the working copy (cast to its dtype)."""
        if self._pairs:  # one call casting every pair, not a Python loop of 272 copies
            torch._foreach_copy_([w for w, _ in self._pairs], [m for _, m in self._pairs])
        self.refreshes += 1

    def reference(self, ref):
        """The reference policy in the working precision: a LoRA run's adapter-off view of
        the working copy, or a separate frozen model cast in place (None stays None)."""
        if self.working is self.master or ref is None:
            return ref
        if isinstance(ref, AdapterDisabled):
            return AdapterDisabled(self.working)
        return cast_parameters(ref, self.dtype)
