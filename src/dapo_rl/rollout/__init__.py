"""Rollout engines behind one small interface: prompts in, a ``Rollout`` out.

``HFEngine`` samples from the training model itself (any device); ``VLLMEngine``
(``rollout/vllm_engine.py``, GPU only, imported lazily) samples with vLLM and follows the
trainer through ``sync_weights``. Every engine has ``generate``, ``sync_weights``, ``sleep``
(free sampling memory before an update) and ``pad_id``.
"""

from dapo_rl.rollout.engine import HFEngine, Rollout, concat_rollouts, sample_tokens

__all__ = ["HFEngine", "Rollout", "concat_rollouts", "make_engine", "sample_tokens"]


def make_engine(cfg, model, tokenizer, *, autocast_dtype=None):
    """The engine ``rollout.engine`` names, sampling from (or synced to) ``model``."""
    if cfg.rollout.engine == "vllm":
        from dapo_rl.rollout.vllm_engine import VLLMEngine, VLLMSettings

        return VLLMEngine(tokenizer, VLLMSettings.from_config(cfg))
    return HFEngine(
        model,
        tokenizer,
        batch_size=cfg.rollout.batch_size,
        autocast_dtype=autocast_dtype,
        lean=cfg.rollout.lean_decode,
    )
