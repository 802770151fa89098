"""The vLLM rollout engine: fast sampling on a GPU, colocated with training.

Optional (``pip install 'dapo-rl[vllm]'``, CUDA only); vLLM is imported only when an engine
is built without an injected ``llm``. Same interface as ``HFEngine``: ``generate`` returns a
``Rollout`` with the sampler's per-token log-probs, groups contiguous (row ``i*n + j``).

Choices:
- one vLLM instance per training process, on that process's GPU; ``rollout.vllm_memory``
  caps its share of the GPU. In a torchrun job every rank samples its own prompts, and
  vLLM joins the job's process group (``external_launcher``) instead of spawning workers;
- vLLM runs inside this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so
  ``sync_weights`` copies the trainer's weights straight into its model after each update
  (a LoRA adapter merged in) and then drops the prefix cache, whose keys and values the
  old weights computed;
- log-probs are vLLM's ``processed_logprobs``: after temperature (and top-p), which is the
  trainer's convention when ``top_p == 1``. Other kernels and precision still make them
  differ slightly from the trainer's, so a vLLM run recomputes old log-probs
  (``train.recompute_old_logprobs``) and may correct the rest with ``algo.tis_cap``;
- prompts go in as token ids, encoded exactly as ``HFEngine.encode`` does. Generation stops
  at the tokenizer's EOS, which is part of the completion; a completion that ended neither
  with EOS nor at another stop token of the model is truncated;
- the ``generator`` argument is accepted and ignored: vLLM draws its noise from the seed it
  was built with.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch

from dapo_rl import dist
from dapo_rl.errors import DapoError
from dapo_rl.models import export_weights
from dapo_rl.rollout.engine import Rollout


def start_llm(
    model_path: str,
    *,
    gpu_memory_utilization: float,
    dtype: str,
    seed: int,
    max_model_len: int | None = None,
):
    """A vLLM ``LLM`` in this process, sharing the GPU with training."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        from vllm import LLM
    except ImportError:
        raise DapoError(
            "rollout.engine=vllm needs vLLM on a CUDA machine: pip install 'dapo-rl[vllm]'"
        ) from None
    kw = {"distributed_executor_backend": "external_launcher"} if dist.world_size() > 1 else {}
    return LLM(
        model=model_path,
        dtype=dtype,
        seed=seed,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len,
        enable_prefix_caching=True,
        logprobs_mode="processed_logprobs",
        **kw,
    )


def _vllm_sampling_params(**kw):
    from vllm import SamplingParams

    return SamplingParams(**kw)


def to_rollout(
    prompt_ids: Sequence[Sequence[int]], outputs, *, n: int, eos_id: int, pad_id: int
) -> Rollout:
    """vLLM ``RequestOutput``s (one per prompt, ``n`` completions each) as a ``Rollout``.

    Each completion carries ``index``, ``token_ids``, ``finish_reason`` and ``logprobs``: one
    dict per generated token mapping token ids to objects with a ``logprob``, which holds
    at least the sampled token.
    """
    if len(outputs) != len(prompt_ids):
        raise ValueError(f"{len(outputs)} vLLM outputs for {len(prompt_ids)} prompts")
    prompts, rows, logps, ended = [], [], [], []
    for ids, out in zip(prompt_ids, outputs, strict=True):
        completions = sorted(out.outputs, key=lambda c: c.index)
        if len(completions) != n:
            raise ValueError(f"expected {n} completions per prompt, got {len(completions)}")
        for c in completions:
            tokens = list(c.token_ids)
            if c.logprobs is None or len(c.logprobs) != len(tokens):
                raise ValueError("vLLM returned no log-prob for some token: sample with logprobs=0")
            prompts.append(list(ids))
            rows.append(tokens)
            logps.append([step[t].logprob for t, step in zip(tokens, c.logprobs, strict=True)])
            ended.append(bool(tokens) and (tokens[-1] == eos_id or c.finish_reason == "stop"))
    b, tp = len(rows), max(len(p) for p in prompts)
    tc = max(1, max(len(r) for r in rows))
    out = Rollout(
        prompt_ids=torch.full((b, tp), pad_id, dtype=torch.long),
        prompt_mask=torch.zeros((b, tp), dtype=torch.long),
        completion_ids=torch.full((b, tc), pad_id, dtype=torch.long),
        mask=torch.zeros((b, tc), dtype=torch.long),
        logp=torch.zeros((b, tc), dtype=torch.float32),
        lengths=torch.tensor([len(r) for r in rows], dtype=torch.long),
        truncated=~torch.tensor(ended, dtype=torch.bool),
    )
    for i, (p, r, lp) in enumerate(zip(prompts, rows, logps, strict=True)):
        out.prompt_ids[i, tp - len(p) :] = torch.tensor(p, dtype=torch.long)
        out.prompt_mask[i, tp - len(p) :] = 1
        out.completion_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        out.mask[i, : len(r)] = 1
        out.logp[i, : len(r)] = torch.tensor(lp, dtype=torch.float32)
    return out


class VLLMEngine:
    """Samples completions with vLLM; ``sync_weights`` keeps it on the trainer's weights.

    ``llm`` and ``sampling_params`` (a callable building vLLM ``SamplingParams`` from
    keywords) can be injected; by default they come from vLLM itself.
    """

    def __init__(
        self,
        model_path: str,
        tokenizer,
        *,
        llm=None,
        sampling_params: Callable | None = None,
        gpu_memory_utilization: float = 0.3,
        dtype: str = "bfloat16",
        seed: int = 0,
        max_model_len: int | None = None,
    ):
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.llm = llm
        if llm is None:
            self.llm = start_llm(
                model_path,
                gpu_memory_utilization=gpu_memory_utilization,
                dtype=dtype,
                seed=seed,
                max_model_len=max_model_len,
            )
        self.sampling_params = sampling_params or _vllm_sampling_params

    def encode(self, prompts: list[str]) -> list[list[int]]:
        return [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]

    def generate(
        self,
        prompts: list[str],
        *,
        n: int = 1,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> Rollout:
        """``n`` completions per prompt, grouped contiguously: row ``i*n + j``.

        vLLM schedules its own batches: ``batch_size`` and ``generator`` are ignored.
        """
        if not prompts:
            raise ValueError("no prompts to generate from")
        prompt_ids = self.encode(prompts)
        params = self.sampling_params(
            n=n,
            max_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            logprobs=0,  # the sampled token's log-prob only
            stop_token_ids=[self.eos_id],
        )
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False
        )
        return to_rollout(prompt_ids, outputs, n=n, eos_id=self.eos_id, pad_id=self.pad_id)

    def sync_weights(self, model) -> None:
        """Copy the trainer's current weights into vLLM's model (LoRA merged in)."""
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.model.load_weights(export_weights(model).items())
        self.llm.reset_prefix_cache()  # cached keys and values came from the old weights
