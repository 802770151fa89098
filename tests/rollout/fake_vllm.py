"""A stand-in for ``vllm.LLM`` that follows the API of vLLM 0.27-0.31 (checked against the
0.27.0 and 0.31.0 sources), for the calls ``VLLMEngine`` makes:

- ``LLM(model, *, tensor_parallel_size, dtype, seed, gpu_memory_utilization, max_model_len,
  enable_sleep_mode, enable_prefix_caching, logprobs_mode, distributed_executor_backend)``:
  the same keyword names (an unknown one is a TypeError, as in vLLM's ``EngineArgs``);
- ``generate(prompts, sampling_params, *, use_tqdm)`` with ``{"prompt_token_ids": [...]}``
  prompts, returning one ``RequestOutput`` per prompt whose ``outputs[j]`` carry ``index``,
  ``token_ids``, ``logprobs`` (one {token id: Logprob} mapping per token) and
  ``finish_reason``; here the completions are scripted (``script``) and come back in
  reverse ``index`` order, which the adapter must not rely on;
- ``apply_model(func) -> [func(model)]`` (in-process: one worker) and the model's
  ``load_weights(iterable of (name, tensor))``, which copies each tensor into its own
  parameter as vLLM's weight loaders do;
- ``sleep(level)``, ``wake_up(tags)`` with tags from ("weights", "kv_cache", "scheduling"),
  and ``reset_prefix_cache()``. Sleep mode needs ``enable_sleep_mode=True``. Loading weights
  into slept weights, generating before everything is awake, or generating from weights
  dropped by level 2 and never reloaded are errors here (in vLLM: a crash or garbage).

Every call is recorded in ``events``; the model records what it was sent and how many
streamed tensors were alive at once (weak references: a tensor is dead once neither the
sender nor the receiver holds it).
"""

from __future__ import annotations

import weakref
from types import SimpleNamespace

EOS, LIMIT = 2, 5
_SAMPLING_FIELDS = {  # the vLLM SamplingParams fields the adapter may set
    "n",
    "temperature",
    "top_p",
    "max_tokens",
    "logprobs",
    "stop_token_ids",
    "detokenize",
    "seed",
}


def sampling_params(**kw):
    """``vllm.SamplingParams`` for the fields above; any other keyword is a TypeError."""
    unknown = set(kw) - _SAMPLING_FIELDS
    if unknown:
        raise TypeError(f"SamplingParams got unexpected keywords {sorted(unknown)}")
    return SimpleNamespace(**kw)


def script(prompt_ids, j):
    """Completion j of a prompt: 0 ends with EOS after 3 tokens; 1 runs to the limit without
    EOS; 2 puts EOS exactly at the limit. Token values encode (first prompt token, j)."""
    base = 1000 * prompt_ids[0] + 10 * j
    match j % 3:
        case 0:
            return [base + 1, base + 2, EOS], "stop"
        case 1:
            return [base + k for k in range(1, LIMIT + 1)], "length"
        case _:
            return [base + k for k in range(1, LIMIT)] + [EOS], "stop"


def logprob(token: int) -> float:
    return -((token % 97) + 1) / 100  # a distinct, recognisable value per token


class FakeModel:
    """vLLM's model inside the worker: ``load_weights`` consumes the stream."""

    def __init__(self, llm: FakeLLM):
        self.llm = llm
        self.loaded: dict = {}  # name -> a copy of the last tensor sent under it
        self.order: list[str] = []  # names in the order they arrived (last sync)
        self.peak_alive = 0  # most streamed tensors alive at once (last sync)

    def load_weights(self, weights):
        if "weights" in self.llm.asleep:
            raise RuntimeError("load_weights into weights that sleep mode freed")
        alive: list[weakref.ref] = []
        self.order, self.peak_alive = [], 0
        for name, tensor in weights:
            self.loaded[name] = tensor.clone()  # vLLM copies into its own parameter
            self.order.append(name)
            alive = [r for r in alive if r() is not None]
            alive.append(weakref.ref(tensor))
            self.peak_alive = max(self.peak_alive, len(alive))
            del tensor  # the loop variable would otherwise hold it into the next item
        self.llm.garbage = False
        self.llm.events.append(("load_weights", len(self.order)))
        return set(self.order)


class FakeLLM:
    def __init__(
        self,
        model: str = "unused",
        *,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        seed: int = 0,
        gpu_memory_utilization: float = 0.92,
        max_model_len: int | None = None,
        enable_sleep_mode: bool = False,
        enable_prefix_caching: bool | None = None,
        logprobs_mode: str = "raw_logprobs",
        distributed_executor_backend: str | None = None,
    ):
        self.kwargs = dict(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enable_sleep_mode=enable_sleep_mode,
            enable_prefix_caching=enable_prefix_caching,
            logprobs_mode=logprobs_mode,
            distributed_executor_backend=distributed_executor_backend,
        )
        self.model = FakeModel(self)
        self.events: list[tuple] = []
        self.calls: list[tuple] = []  # (prompts, sampling params) of each generate
        self.asleep: set[str] = set()
        self.garbage = False  # weights dropped by level-2 sleep and not reloaded
        self.with_logprobs, self.n_override = True, None  # test knobs: broken outputs
        self.script = script  # (prompt ids, j) -> (completion j's tokens, finish reason)

    def apply_model(self, func):
        return [func(self.model)]

    def sleep(self, level: int = 1, mode: str = "abort"):
        if not self.kwargs["enable_sleep_mode"]:
            raise ValueError("sleep mode is not enabled (enable_sleep_mode=True)")
        self.events.append(("sleep", level))
        self.asleep = {"weights", "kv_cache"}
        self.garbage = level == 2

    def wake_up(self, tags: list[str] | None = None):
        tags = ["weights", "kv_cache"] if tags is None else tags
        if not set(tags) <= {"weights", "kv_cache", "scheduling"}:
            raise ValueError(f"unknown wake_up tags {tags}")
        self.events.append(("wake_up", list(tags)))
        self.asleep -= set(tags)

    def reset_prefix_cache(self, reset_running_requests=False, reset_connector=False) -> bool:
        self.events.append(("reset_prefix_cache",))
        return True

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True):
        if self.asleep:
            raise RuntimeError(f"generate while {sorted(self.asleep)} sleep")
        if self.garbage:
            raise RuntimeError("generate from weights dropped by sleep level 2")
        self.events.append(("generate", len(prompts)))
        self.calls.append((prompts, sampling_params))
        return [self._request_output(p, sampling_params) for p in prompts]

    def _request_output(self, prompt, params):
        completions = []
        for j in range(self.n_override or params.n):
            tokens, reason = self.script(prompt["prompt_token_ids"], j)
            # the sampled token's log-prob plus a decoy, as vLLM may return top-k entries
            steps = [
                {t: SimpleNamespace(logprob=logprob(t)), t + 1: SimpleNamespace(logprob=-9.0)}
                for t in tokens
            ]
            completions.append(
                SimpleNamespace(
                    index=j,
                    token_ids=tokens,
                    logprobs=steps if self.with_logprobs else None,
                    finish_reason=reason,
                )
            )
        return SimpleNamespace(
            prompt_token_ids=prompt["prompt_token_ids"], outputs=completions[::-1]
        )
