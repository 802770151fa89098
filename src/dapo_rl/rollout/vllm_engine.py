"""The vLLM rollout engine: fast sampling on a GPU, colocated with training.

Optional (``pip install 'dapo-rl[vllm]'``, CUDA only); vLLM is imported only when an engine
is built without an injected ``llm``. Same interface as ``HFEngine``: ``generate`` returns a
``Rollout`` with the sampler's per-token log-probs, groups contiguous (row ``i*n + j``).
Written against vLLM 0.27-0.31's ``LLM`` API (the range pinned in ``pyproject.toml``);
tested against a fake of it only (docs/scaling.md says what has run).

Choices:
- vLLM runs inside each training process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), on that
  process's GPU. In a torchrun job it joins the job's process group (``external_launcher``);
  ``rollout.vllm_tp`` consecutive ranks form one tensor-parallel engine: they pool their
  prompts, all generate the same completions, and each keeps its own share;
- ``sync_weights`` streams the trainer's weights into vLLM's model one tensor at a time
  (``rollout/weights.py``: FSDP2 shards gathered per parameter, LoRA merged per layer) through
  ``LLM.apply_model`` and vLLM's ``load_weights``, then drops the prefix cache, whose keys
  and values the old weights computed. vLLM always runs in bfloat16, whatever
  ``model.dtype``: the weights are cast once per sync, never per token;
- sleep mode (``rollout.vllm_sleep_level``): the trainer calls ``sleep`` before its update,
  so vLLM's KV cache (and its weights: level 1 copies them to CPU, level 2 drops them) give
  their GPU memory to training. ``sync_weights`` wakes the weights first and loads the new
  ones into them; the KV cache wakes only when the next ``generate`` needs it;
- ``max_model_len`` is ``rollout.vllm_max_prompt_tokens`` plus the longest generation
  limit (training or evaluation). A longer prompt is refused: vLLM would silently cut its
  completion at the context end and call it truncated;
- log-probs are vLLM's ``processed_logprobs``: after temperature (and top-p), which is the
  trainer's convention when ``top_p == 1``. Other kernels and precision still make them
  differ slightly from the trainer's, so a vLLM run recomputes old log-probs
  (``train.recompute_old_logprobs``) and may correct the rest with ``algo.tis_cap``;
- prompts go in as token ids, encoded exactly as ``HFEngine.encode`` does. Generation stops
  at the tokenizer's EOS, which is part of the completion; a completion that ended neither
  with EOS nor at another stop token of the model is truncated;
- the ``generator`` argument is accepted and ignored: vLLM draws its noise from the seed it
  was built with (``run.seed`` + the engine's index, the same on the ranks of one engine).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from dapo_rl import dist
from dapo_rl.errors import DapoError
from dapo_rl.rollout.engine import Rollout
from dapo_rl.rollout.weights import stream_weights

_TAGS = ("weights", "kv_cache")  # what vLLM's sleep frees and ``wake_up(tags=...)`` restores


@dataclass(frozen=True)
class VLLMSettings:
    """What the engine needs from the config, as plain values."""

    model: str  # a saved model directory or hub id: vLLM loads its config and first weights
    tp: int  # tensor_parallel_size: consecutive ranks that share one engine
    memory: float  # gpu_memory_utilization: vLLM's share of the GPU
    max_prompt_tokens: int  # longest prompt accepted
    max_new_tokens: int  # longest generation limit asked for (training or evaluation)
    sleep_level: int  # 0: no sleep mode; 1 or 2: ``LLM.sleep(level)`` before updates
    seed: int  # run seed; engine k samples with seed + k

    @classmethod
    def from_config(cls, cfg, **overrides) -> VLLMSettings:
        """The settings a run's ``Config`` implies (``overrides`` replace single fields)."""
        from dapo_rl import models

        r = cfg.rollout
        values = dict(
            tp=r.vllm_tp,
            memory=r.vllm_memory,
            max_prompt_tokens=r.vllm_max_prompt_tokens,
            max_new_tokens=max(r.max_new_tokens, cfg.eval.max_new_tokens or 0),
            sleep_level=r.vllm_sleep_level,
            seed=cfg.run.seed,
        )
        values.update(overrides)
        if "model" not in values:
            values["model"] = models.resolve(cfg.model.name)
        return cls(**values)

    @property
    def max_model_len(self) -> int:
        return self.max_prompt_tokens + self.max_new_tokens

    def llm_kwargs(self, *, rank: int, world: int) -> dict:
        """Keyword arguments of ``vllm.LLM`` for this rank; refuses a TP size that cannot fit."""
        if world % self.tp:
            raise DapoError(
                f"rollout.vllm_tp={self.tp} must divide the number of processes ({world}): "
                "launch with torchrun, one process per GPU"
            )
        kw = {"distributed_executor_backend": "external_launcher"} if world > 1 else {}
        return dict(
            model=self.model,
            tensor_parallel_size=self.tp,
            dtype="bfloat16",
            gpu_memory_utilization=self.memory,
            max_model_len=self.max_model_len,
            enable_sleep_mode=self.sleep_level > 0,
            seed=self.seed + rank // self.tp,  # the ranks of one engine must draw alike
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",
            **kw,
        )


def start_llm(kwargs: dict):
    """A vLLM ``LLM`` in this process, sharing the GPU with training."""
    # in-process engine: ``apply_model`` then runs our weight stream directly on the model
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        from vllm import LLM
    except ImportError:
        raise DapoError(
            "rollout.engine=vllm needs vLLM on a CUDA machine: pip install 'dapo-rl[vllm]'"
        ) from None
    return LLM(**kwargs)


def _vllm_sampling_params(**kw):
    from vllm import SamplingParams

    return SamplingParams(**kw)


def _tp_group(tp: int):
    """This rank's group of ``tp`` consecutive ranks (None when ``tp`` is 1)."""
    if tp == 1:
        return None
    world = dist.world_size()
    ranks = [list(range(i, i + tp)) for i in range(0, world, tp)]
    group, _ = torch.distributed.new_subgroups_by_enumeration(ranks)  # every rank calls it
    return group


def _empty_cache() -> None:
    """Hand the training allocator's cached blocks back before vLLM maps its memory again."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def to_rollout(
    prompt_ids: Sequence[Sequence[int]], outputs, *, n: int, eos_id: int, pad_id: int
) -> Rollout:
    """vLLM ``RequestOutput``s (one per prompt, ``n`` completions each) as a ``Rollout``.

    Each completion carries ``index``, ``token_ids``, ``finish_reason`` and ``logprobs``: one
    mapping per generated token from token ids to objects with a ``logprob``, which holds
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

    ``llm`` (a ``vllm.LLM``) and ``sampling_params`` (a callable building vLLM
    ``SamplingParams`` from keywords) can be injected; by default they come from vLLM.
    """

    def __init__(
        self,
        tokenizer,
        settings: VLLMSettings,
        *,
        llm=None,
        sampling_params: Callable | None = None,
    ):
        self.tokenizer = tokenizer
        self.settings = settings
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        kwargs = settings.llm_kwargs(rank=dist.rank(), world=dist.world_size())
        self.tp_group = _tp_group(settings.tp)
        self.llm = llm if llm is not None else start_llm(kwargs)
        self.sampling_params = sampling_params or _vllm_sampling_params
        self.asleep: set[str] = set()  # the ``_TAGS`` vLLM has freed

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
        self._check_lengths(prompt_ids, max_new_tokens)
        params = self.sampling_params(
            n=n,
            max_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            logprobs=0,  # the sampled token's log-prob only
            stop_token_ids=[self.eos_id],
            detokenize=False,  # the trainer decodes the token ids itself
        )
        pooled, mine = self._pool(prompt_ids)
        self._wake(_TAGS)
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in pooled], params, use_tqdm=False
        )
        return to_rollout(prompt_ids, outputs[mine], n=n, eos_id=self.eos_id, pad_id=self.pad_id)

    def _check_lengths(self, prompt_ids: list[list[int]], max_new_tokens: int) -> None:
        s, longest = self.settings, max(len(ids) for ids in prompt_ids)
        if max_new_tokens > s.max_new_tokens or longest > s.max_prompt_tokens:
            raise DapoError(
                f"a {longest}-token prompt with a {max_new_tokens}-token limit does not fit "
                f"vLLM's context of {s.max_model_len} tokens: raise "
                "rollout.vllm_max_prompt_tokens (or shorten the prompts)"
            )

    def _pool(self, prompt_ids: list[list[int]]) -> tuple[list[list[int]], slice]:
        """Every prompt of this rank's engine (its TP group), and where this rank's lie."""
        if self.tp_group is None:
            return prompt_ids, slice(0, len(prompt_ids))
        parts: list = [None] * self.settings.tp
        torch.distributed.all_gather_object(parts, prompt_ids, group=self.tp_group)
        start = sum(len(p) for p in parts[: torch.distributed.get_rank(self.tp_group)])
        return [ids for part in parts for ids in part], slice(start, start + len(prompt_ids))

    def _wake(self, tags: Sequence[str]) -> None:
        """Give vLLM back the memory of ``tags``, weights before the KV cache."""
        todo = [t for t in tags if t in self.asleep]
        if "weights" in todo and self.settings.sleep_level == 2:
            # level 2 dropped them: only a sync refills them (its own wake comes first)
            raise DapoError("vLLM's weights were dropped in sleep level 2: sync before sampling")
        for tag in todo:
            _empty_cache()
            self.llm.wake_up(tags=[tag])
            self.asleep.discard(tag)

    def sleep(self) -> None:
        """Free vLLM's GPU memory for the update (no-op without sleep mode or when asleep)."""
        if self.settings.sleep_level == 0 or self.asleep:
            return
        self.llm.sleep(level=self.settings.sleep_level)
        self.asleep = set(_TAGS)

    def sync_weights(self, model) -> None:
        """Stream the trainer's current weights into vLLM's model (LoRA merged in).

        A collective under FSDP2: every rank calls it, in the same step.
        """
        if "weights" in self.asleep:
            _empty_cache()
            self.llm.wake_up(tags=["weights"])  # the memory the new weights are loaded into
            self.asleep.discard("weights")
        self.llm.apply_model(lambda vllm_model: vllm_model.load_weights(stream_weights(model)))
        self.llm.reset_prefix_cache()  # cached keys and values came from the old weights
