"""Run configuration: nested frozen dataclasses, presets, overrides and validation.

This is the only place defaults live. Every field carries its meaning in ``help`` so that
``dapo train --help`` can list every key. A config is built from (in order) the defaults,
a preset, a YAML file and dotted ``KEY=VALUE`` overrides, then checked once by
``validate``. Presets are named settings of DAPO's four switches:

- ``dapo`` (the defaults): clip-higher 0.2/0.28, token-level loss, dynamic sampling on
  raw accuracy, soft overlong punishment, no KL (DAPO, arXiv 2503.14476).
- ``grpo``: symmetric clip 0.2, per-sequence mean loss, no dynamic sampling, no overlong
  shaping, KL 0.04 with the k3 estimator (DeepSeekMath, arXiv 2402.03300).
- ``dr_grpo``: ``grpo`` without std scaling, with the constant-length sum (Dr. GRPO,
  arXiv 2503.20783) and no KL.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import reprlib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dapo_rl.data.templates import AUTO, TEMPLATES
from dapo_rl.errors import DapoError
from dapo_rl.rewards.isolation import MAX_TIMEOUT


def _f(default: Any, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ModelConfig:
    name: str = _f(
        "smollm2-135m-instruct",
        "model alias (smollm2-135m-instruct, tiny-random), local path or hub id",
    )
    dtype: str = _f(
        "auto",
        "compute dtype: float32, bfloat16 (float32 master weights and AdamW state, a "
        "bfloat16 working copy refreshed once per optimizer step; FSDP: autocast), or auto "
        "(bfloat16 on a GPU with bf16 or a CPU with AMX matrix units, else float32)",
    )
    lora_rank: int = _f(0, "LoRA adapter rank (PEFT); 0 trains every weight")
    lora_alpha: float = _f(32.0, "LoRA scaling numerator: the update is scaled by alpha / rank")
    lora_targets: str = _f(
        "all-linear", "LoRA target modules: all-linear, or names such as q_proj,v_proj"
    )


@dataclass(frozen=True)
class DataConfig:
    task: str = _f("arithmetic", "built-in task (arithmetic) or 'file' to train on data.path")
    path: str | None = _f(
        None,
        "training data (.jsonl/.json/.csv/.parquet or a datasets save_to_disk folder); "
        "setting it selects task=file",
    )
    format: str | None = _f(
        None, "file layout (gsm8k, math500, aime, amc, asdiv, dapo17k); auto-detected when unset"
    )
    prompt_field: str | None = _f(None, "field holding the problem text (dotted path allowed)")
    answer_field: str | None = _f(None, "field holding the reference answer (dotted path allowed)")
    prompt_template: str | None = _f(
        None, "the problem built from columns, e.g. '{Body} {Question}' (replaces prompt_field)"
    )
    template: str = _f(
        "auto",
        "prompt template: auto (dapo_oneshot for arithmetic, plain for chat-message or "
        "prompt_template rows, else dapo), dapo_oneshot, steps_oneshot, dapo, boxed, plain",
    )
    min_value: int = _f(1, "arithmetic: smallest operand")
    max_value: int = _f(20, "arithmetic: largest operand")
    num_terms: int = _f(2, "arithmetic: operands per problem")
    ops: str = _f("+", "arithmetic: operators to draw from, e.g. '+-'")


@dataclass(frozen=True)
class RewardsConfig:
    fn: str = _f(
        "dapo_answer", "verifier: dapo_answer, math, gsm8k, module:function, or a weighted sum"
    )
    timeout: float = _f(2.0, "seconds allowed per verifier call; a timeout counts as wrong")


@dataclass(frozen=True)
class RolloutConfig:
    prompts_per_step: int = _f(4, "informative groups (prompts) trained on per step")
    group_size: int = _f(8, "completions sampled per prompt (G)")
    max_new_tokens: int = _f(64, "generation limit; a completion without EOS by then is truncated")
    temperature: float = _f(1.0, "sampling temperature (also applied to training log-probs)")
    top_p: float = _f(1.0, "nucleus sampling threshold")
    batch_size: int = _f(64, "most sequences generated in one batch")
    engine: str = _f("hf", "sampler: hf (the training model itself) or vllm (GPU, dapo-rl[vllm])")
    lean_decode: bool = _f(
        True,
        "hf engine: decode Llama/Mistral/Qwen2 with the lean step (rollout/lean.py) instead "
        "of the model's forward; other models always use the forward",
    )
    vllm_memory: float = _f(
        0.3, "vLLM gpu_memory_utilization: share of GPU memory it takes (weights and KV cache)"
    )
    vllm_tp: int = _f(
        1, "vLLM tensor_parallel_size: ranks sharing one engine (divides the torchrun world)"
    )
    vllm_sleep_level: int = _f(
        1,
        "vLLM sleep mode during the update: 0 off, 1 weights to CPU and KV cache freed, "
        "2 both freed (weights re-sent anyway)",
    )
    vllm_max_prompt_tokens: int = _f(
        1024, "longest prompt vLLM accepts; its max_model_len is this + the generation limit"
    )


@dataclass(frozen=True)
class AlgoConfig:
    eps_low: float = _f(0.2, "lower clip range: ratio >= 1 - eps_low")
    eps_high: float = _f(0.28, "upper clip range: ratio <= 1 + eps_high (DAPO clip-higher)")
    dual_clip: float | None = _f(
        None, "dual-clip constant c > 1 capping negative-advantage loss at c*|A|"
    )
    loss_agg: str = _f(
        "token_mean",
        "token_mean (DAPO), seq_mean_token_mean (GRPO), seq_mean_token_sum_norm (Dr. GRPO)",
    )
    norm_len: int | None = _f(None, "Dr. GRPO constant length; defaults to rollout.max_new_tokens")
    scale_adv: bool = _f(True, "divide advantages by the group std (off in Dr. GRPO)")
    adv_eps: float = _f(1e-6, "added to the group std")
    dynamic_sampling: bool = _f(True, "drop groups whose accuracy is all-equal and refill (DAPO)")
    filter_metric: str = _f(
        "acc",
        "what dynamic sampling compares within a group: acc (raw correctness) or score (the "
        "verifier's reward before overlong shaping, for partial-credit rewards)",
    )
    max_gen_rounds: int = _f(
        4, "cap on generation rounds per step; at the cap the step trains on what it has"
    )
    oversample: bool = _f(
        True, "dynamic sampling requests missing / (last step's pass-through rate) prompts"
    )
    carry_over: bool = _f(
        False,
        "keep informative groups found beyond prompts_per_step (at most prompts_per_step - 1) "
        "and train on them first in the next step",
    )
    predictive_skip: bool = _f(
        False,
        "pass over a prompt whose last k groups were all correct (all wrong) with probability "
        "1 - explore_easy^k (explore_hard^k) before sampling it (GRESO)",
    )
    skip_target_zero_var: float = _f(
        0.25, "predictive skip: zero-variance share aimed at, half all-correct, half all-wrong"
    )
    skip_explore_init: float = _f(0.5, "predictive skip: starting value of both explore rates")
    skip_explore_step: float = _f(0.05, "predictive skip: change of an explore rate per step")
    skip_explore_min: float = _f(
        0.05, "predictive skip: lowest explore rate and lowest chance of sampling a prompt"
    )
    retire_after: int = _f(
        0, "never sample again a prompt all correct in each of its last N groups; 0 = off"
    )
    overlong_shaping: bool = _f(True, "soft linear length penalty near the limit (DAPO)")
    overlong_buffer: int = _f(16, "tokens before max_new_tokens where the penalty ramps up")
    overlong_penalty: float = _f(1.0, "penalty at max_new_tokens")
    overlong_filter: bool = _f(
        False, "mask truncated completions out of the loss (DAPO overlong filtering)"
    )
    kl_coef: float = _f(0.0, "weight of the KL term to the reference model (0 loads no reference)")
    kl_kind: str = _f("k3", "KL estimator: k1, k2, k3")
    tis_cap: float | None = _f(
        None,
        "truncated importance-sampling cap C: policy loss weighted by min(pi_old/pi_sampler, C)",
    )


@dataclass(frozen=True)
class TrainConfig:
    steps: int = _f(20, "training steps")
    lr: float = _f(1e-5, "AdamW learning rate after warm-up")
    warmup_steps: int = _f(2, "linear warm-up steps (optimizer steps), then train.lr_schedule")
    lr_schedule: str = _f(
        "constant",
        "after warm-up: constant, linear or cosine decay to min_lr_ratio * lr over "
        "steps * mini_batches_per_step optimizer steps",
    )
    min_lr_ratio: float = _f(0.0, "linear/cosine: the last learning rate as a share of train.lr")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "gradient-norm clip")
    mini_batches_per_step: int = _f(
        4, "optimizer steps per rollout batch (the clip binds from the second on)"
    )
    micro_batch_size: int = _f(8, "sequences per forward/backward (gradient accumulation)")
    share_prompt: bool = _f(True, "encode each group's prompt once in the update (KV shared by G)")
    max_tokens_per_micro_batch: int = _f(
        0,
        "also cap each micro-batch at this many padded tokens (a group's rows are split when "
        "the group alone exceeds it); 0 = rows only",
    )
    logits_chunk: int = _f(
        2048,
        "LM-head positions whose float32 logits exist at once in the update and log-prob "
        "passes (recomputed in the backward pass); 0 = a whole micro-batch at once",
    )
    grad_checkpointing: bool = _f(
        False, "activation checkpointing of every decoder layer (recomputed in the backward pass)"
    )
    recompute_old_logprobs: bool = _f(
        False,
        "recompute old log-probs with a forward pass instead of the sampler's own (always "
        "done with model.dtype=bfloat16, whose sampler log-probs differ from a training forward)",
    )
    fsdp: bool = _f(
        False,
        "FSDP2 under torchrun: shard every decoder layer and the root (embeddings, norm, LM "
        "head): weights, gradients and AdamW state split over the ranks; with "
        "model.dtype=bfloat16 bf16 compute, float32 master weights and gradient reduction "
        "(no effect in one process)",
    )
    cpu_offload: bool = _f(
        False, "with train.fsdp: keep the shards, gradients and AdamW state in host memory"
    )
    max_skipped_steps: int = _f(
        8,
        "stop (with a checkpoint) after this many optimizer steps in a row skipped for a "
        "non-finite loss or gradient; 0 = never",
    )


@dataclass(frozen=True)
class EvalConfig:
    every: int = _f(
        5, "held-out evaluation every N steps (and at start and end); 0 = start and end only"
    )
    size: int = _f(200, "held-out problems")
    path: str | None = _f(
        None,
        "held-out files, comma-separated, logged as eval/<name>/... (name: file stem, or its "
        "folder for test.jsonl); a file task's first file is also eval/...",
    )
    k: int = _f(0, "samples per problem for avg@k, pass@k and maj@k; 0 = greedy accuracy only")
    temperature: float = _f(1.0, "sampling temperature of the k samples (DAPO evaluates at 1.0)")
    top_p: float = _f(0.7, "nucleus threshold of the k samples (DAPO evaluates at 0.7)")
    max_new_tokens: int | None = _f(
        None, "generation limit at evaluation; defaults to rollout.max_new_tokens"
    )
    batch_size: int = _f(100, "sequences per evaluation batch")


@dataclass(frozen=True)
class RunConfig:
    dir: str = _f("runs/default", "run directory: config.yaml, metrics.jsonl, checkpoints/")
    seed: int = _f(0, "seed of every random choice (data, sampling, init)")
    overwrite: bool = _f(False, "reuse a run directory that holds another run")
    checkpoint_every: int = _f(10, "checkpoint every N steps (and at the end); 0 = end only")
    keep_checkpoints: int = _f(2, "checkpoints kept")
    threads: int = _f(0, "torch CPU threads; 0 = leave torch's default")
    progress: bool = _f(True, "progress bar on the console")


@dataclass(frozen=True)
class LogConfig:
    sinks: str = _f("jsonl", "comma-separated metric sinks: jsonl (always on), tensorboard, wandb")
    wandb_project: str = _f("dapo-rl", "Weights & Biases project")
    wandb_mode: str = _f("offline", "Weights & Biases mode: online, offline, disabled")


@dataclass(frozen=True)
class AlertsConfig:
    """Thresholds of the training-health alerts (``dapo_rl.alerts``)."""

    baseline_steps: int = _f(5, "first training steps whose mean is the drift baseline")
    entropy_min: float = _f(0.1, "entropy/mean below this: collapsed")
    entropy_drop: float = _f(0.5, "entropy/mean below this fraction of its baseline: falling")
    len_growth: float = _f(2.0, "len/mean above this multiple of its baseline: exploding")
    truncated_rise: float = _f(0.1, "truncated share this far above baseline with len/max at limit")
    truncated_frac_max: float = _f(0.3, "len/truncated_frac above this: truncation dominates")
    zero_var_frac_max: float = _f(0.5, "ds/zero_var_frac above this: groups carry no signal")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    log: LogConfig = field(default_factory=LogConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    resume: bool = _f(False, "continue the run in run.dir from its last checkpoint")
    preset: str = _f("dapo", "the preset this config started from")


PRESETS: dict[str, dict[str, Any]] = {
    "dapo": {},
    "grpo": {
        "algo.eps_high": 0.2,
        "algo.loss_agg": "seq_mean_token_mean",
        "algo.dynamic_sampling": False,
        "algo.overlong_shaping": False,
        "algo.kl_coef": 0.04,
        "algo.kl_kind": "k3",
    },
    "dr_grpo": {
        "algo.eps_high": 0.2,
        "algo.loss_agg": "seq_mean_token_sum_norm",
        "algo.scale_adv": False,
        "algo.dynamic_sampling": False,
        "algo.overlong_shaping": False,
    },
}


def keys(cls: type = Config, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """Every dotted key of the config with its field, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(
            f.default_factory if f.default_factory is not dataclasses.MISSING else None
        ):
            out += keys(f.default_factory, prefix + f.name + ".")
        else:
            out.append((prefix + f.name, f))
    return out


def _allowed_types(annotation: Any) -> tuple[type, ...]:
    names = {"float": float, "int": int, "str": str, "bool": bool, "None": None}
    # safe: the annotations are this module's own source text, never a user's
    ann = eval(annotation, names) if isinstance(annotation, str) else annotation  # safe: own

    if isinstance(ann, types.UnionType):
        return tuple(type(None) if a is None else a for a in ann.__args__)
    return (type(None),) if ann is None else (ann,)


# YAML 1.1 reads ``1e-5`` (no dot) as a string; a float key takes it as the number meant.
_EXP_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")


def _check_type(key: str, value: Any, f: dataclasses.Field) -> Any:
    allowed = _allowed_types(f.type)
    if float in allowed and isinstance(value, str) and _EXP_FLOAT.fullmatch(value.strip()):
        return float(value)
    if value is None and type(None) in allowed:
        return None
    if bool in allowed:
        if isinstance(value, bool):
            return value
    elif float in allowed and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    elif int in allowed and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif str in allowed and isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise DapoError(f"config key {key}: expected {names}, got {reprlib.repr(value)}")


def _known(key: str) -> dataclasses.Field:
    table = dict(keys())
    if key not in table:
        close = difflib.get_close_matches(key, list(table), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise DapoError(f"unknown config key {key!r}{hint}; `dapo train --help` lists them")
    return table[key]


def parse_override(text: str) -> tuple[str, Any]:
    """``algo.eps_high=0.28`` -> ("algo.eps_high", 0.28); values are read as YAML scalars."""
    if "=" not in text:
        raise DapoError(f"override {text!r} is not KEY=VALUE")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, list | dict):  # `data.ops=-` is the text "-", not a YAML list
        value = raw
    return key.strip(), value


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


MAX_CONFIG_BYTES = 1 << 20  # a config file is a few hundred keys at most


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing aliases (``*name``): a config never needs them, and nine
    nested aliases of nine items each make a 338-byte file expand to 387 million strings."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise DapoError(f"line {mark.line + 1}: YAML aliases (*name) are not allowed")
        return super().compose_node(parent, index)


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        if Path(path).stat().st_size > MAX_CONFIG_BYTES or not Path(path).is_file():
            raise DapoError(f"config file {path}: not a regular file of at most 1 MiB")
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise DapoError(f"cannot read config file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise DapoError(f"config file {path}: not UTF-8 text") from None
    try:
        tree = yaml.load(text, Loader=_NoAliasLoader)  # safe: a SafeLoader refusing aliases
    except DapoError as e:
        raise DapoError(f"config file {path} {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise DapoError(f"config file {path}{where}: not valid YAML") from None
    except RecursionError:
        raise DapoError(f"config file {path}: nested too deeply") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise DapoError(
            f"config file {path}: expected a mapping of keys, got {type(tree).__name__}"
        )
    try:
        return flatten(tree)
    except RecursionError:
        raise DapoError(f"config file {path}: nested too deeply") from None


def build(
    preset: str = "dapo",
    file_values: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Defaults <- preset <- file <- overrides, then validate."""
    file_values, overrides = dict(file_values or {}), dict(overrides or {})
    preset = overrides.pop("preset", file_values.pop("preset", preset))
    if not isinstance(preset, str) or preset not in PRESETS:
        raise DapoError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **file_values, **overrides, "preset": preset}
    if values.get("data.path") and "data.task" not in {**file_values, **overrides}:
        values["data.task"] = "file"
    tree: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in values.items():
        f = _known(key)
        value = _check_type(key, value, f)
        if "." in key:
            section, name = key.split(".", 1)
            tree.setdefault(section, {})[name] = value
        else:
            top[key] = value
    sections = {
        f.name: f.default_factory(**tree.get(f.name, {}))
        for f in dataclasses.fields(Config)
        if f.default_factory is not dataclasses.MISSING
    }
    cfg = Config(**sections, **top)
    if cfg.model.dtype == "auto":  # resolved once here, so the saved config names the dtype
        from dapo_rl.perf import auto_dtype

        model = dataclasses.replace(cfg.model, dtype=auto_dtype())
        cfg = dataclasses.replace(cfg, model=model)
    validate(cfg)
    return cfg


FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max


def _check_finite(cfg: Config) -> None:
    """Every float key finite where it is used: in float32 tensors (lr, temperature, penalties,
    coefficients) or as C doubles (timeouts). ``.inf``, ``.nan`` and 1e39 (finite in Python,
    inf in float32) are refused here, before any range check can be fooled by them."""
    for key, _ in keys():
        value = functools.reduce(getattr, key.split("."), cfg)
        if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
            raise DapoError(f"{key} must be a finite number (float32 range), got {value}")


def validate(cfg: Config) -> None:
    """Every range check, each failing with one line naming the key."""
    _check_finite(cfg)
    # the allowed names come from the modules that own them (imported here: they need
    # torch, which importing the config alone does not)
    from dapo_rl.algo.filtering import FILTER_METRICS
    from dapo_rl.algo.losses import AGGREGATION_MODES, KL_KINDS

    a, r, t, d = cfg.algo, cfg.rollout, cfg.train, cfg.data
    checks = [
        (a.eps_low >= 0 and a.eps_low < 1, "algo.eps_low must be in [0, 1)"),
        (a.eps_high >= 0, "algo.eps_high must be >= 0"),
        (a.dual_clip is None or a.dual_clip > 1, "algo.dual_clip must be > 1 (or null)"),
        (a.loss_agg in AGGREGATION_MODES, f"algo.loss_agg must be {_one_of(AGGREGATION_MODES)}"),
        (a.norm_len is None or a.norm_len > 0, "algo.norm_len must be > 0"),
        (a.adv_eps >= 0, "algo.adv_eps must be >= 0"),
        (a.max_gen_rounds >= 1, "algo.max_gen_rounds must be >= 1"),
        (
            a.filter_metric in FILTER_METRICS,
            f"algo.filter_metric must be {_one_of(FILTER_METRICS)}",
        ),
        (
            a.filter_metric == "acc" or not (a.predictive_skip or a.retire_after),
            "algo.filter_metric=score does not combine with algo.predictive_skip or "
            "algo.retire_after (they predict from raw accuracy)",
        ),
        (0 <= a.skip_target_zero_var <= 1, "algo.skip_target_zero_var must be in [0, 1]"),
        (0 < a.skip_explore_min <= 1, "algo.skip_explore_min must be in (0, 1]"),
        (
            a.skip_explore_min <= a.skip_explore_init <= 1,
            "algo.skip_explore_init must be in [algo.skip_explore_min, 1]",
        ),
        (a.skip_explore_step >= 0, "algo.skip_explore_step must be >= 0"),
        (a.retire_after >= 0, "algo.retire_after must be >= 0"),
        (
            not a.overlong_shaping or 0 < a.overlong_buffer < r.max_new_tokens,
            f"algo.overlong_buffer must be in (0, rollout.max_new_tokens={r.max_new_tokens})",
        ),
        (a.overlong_penalty >= 0, "algo.overlong_penalty must be >= 0"),
        (a.kl_coef >= 0, "algo.kl_coef must be >= 0"),
        (a.kl_kind in KL_KINDS, f"algo.kl_kind must be {_one_of(KL_KINDS)}"),
        (
            r.group_size >= 2,
            "rollout.group_size must be >= 2: a completion's advantage is relative to its "
            "group, so a group of one has advantage 0 in every mode and nothing is learned",
        ),
        (r.prompts_per_step >= 1, "rollout.prompts_per_step must be >= 1"),
        (r.max_new_tokens >= 1, "rollout.max_new_tokens must be >= 1"),
        (r.temperature >= 0, "rollout.temperature must be >= 0"),
        (0 < r.top_p <= 1, "rollout.top_p must be in (0, 1]"),
        (r.batch_size >= 1, "rollout.batch_size must be >= 1"),
        (t.steps >= 0, "train.steps must be >= 0"),
        (t.lr > 0, "train.lr must be > 0"),
        (t.warmup_steps >= 0, "train.warmup_steps must be >= 0"),
        (
            t.lr_schedule in ("constant", "linear", "cosine"),
            "train.lr_schedule must be constant, linear or cosine",
        ),
        (0 <= t.min_lr_ratio <= 1, "train.min_lr_ratio must be in [0, 1]"),
        (t.weight_decay >= 0, "train.weight_decay must be >= 0"),
        (t.max_grad_norm > 0, "train.max_grad_norm must be > 0"),
        (t.mini_batches_per_step >= 1, "train.mini_batches_per_step must be >= 1"),
        (t.micro_batch_size >= 1, "train.micro_batch_size must be >= 1"),
        (t.max_tokens_per_micro_batch >= 0, "train.max_tokens_per_micro_batch must be >= 0"),
        (t.logits_chunk >= 0, "train.logits_chunk must be >= 0"),
        (t.max_skipped_steps >= 0, "train.max_skipped_steps must be >= 0"),
        (
            cfg.model.dtype in ("float32", "bfloat16"),
            "model.dtype must be float32, bfloat16 or auto",
        ),
        (cfg.model.lora_rank >= 0, "model.lora_rank must be >= 0"),
        (cfg.model.lora_alpha > 0, "model.lora_alpha must be > 0"),
        (r.engine in ("hf", "vllm"), "rollout.engine must be hf or vllm"),
        (0 < r.vllm_memory <= 1, "rollout.vllm_memory must be in (0, 1]"),
        (r.vllm_tp >= 1, "rollout.vllm_tp must be >= 1"),
        (r.vllm_sleep_level in (0, 1, 2), "rollout.vllm_sleep_level must be 0, 1 or 2"),
        (r.vllm_max_prompt_tokens >= 1, "rollout.vllm_max_prompt_tokens must be >= 1"),
        (
            r.engine != "vllm" or cfg.model.name != "tiny-random",
            "rollout.engine=vllm needs a saved model (tiny-random exists only in memory)",
        ),
        (
            r.engine != "vllm" or t.recompute_old_logprobs,
            "rollout.engine=vllm needs train.recompute_old_logprobs=true (the sampler's "
            "log-probs come from other kernels and precision)",
        ),
        (
            not (t.fsdp and cfg.model.lora_rank > 0),
            "train.fsdp with model.lora_rank > 0 is not supported (LoRA weights are small: "
            "leave the model whole)",
        ),
        (not t.cpu_offload or t.fsdp, "train.cpu_offload needs train.fsdp=true"),
        (a.tis_cap is None or a.tis_cap >= 1, "algo.tis_cap must be >= 1 (or null)"),
        (
            a.tis_cap is None or recomputes_old_logprobs(cfg),
            "algo.tis_cap needs train.recompute_old_logprobs=true (else every weight is 1)",
        ),
        (d.task in ("arithmetic", "file"), "data.task must be arithmetic or file"),
        (d.template in (AUTO, *TEMPLATES), f"data.template must be {_one_of((AUTO, *TEMPLATES))}"),
        (d.task != "file" or bool(d.path), "data.task=file needs data.path"),
        (1 <= d.min_value <= d.max_value, "data.min_value must be >= 1 and <= data.max_value"),
        (d.num_terms >= 2, "data.num_terms must be >= 2"),
        (bool(d.ops) and set(d.ops) <= set("+-*"), "data.ops must use only + - *"),
        (cfg.eval.every >= 0, "eval.every must be >= 0"),
        (cfg.eval.size >= 1, "eval.size must be >= 1"),
        (
            cfg.eval.max_new_tokens is None or cfg.eval.max_new_tokens >= 1,
            "eval.max_new_tokens must be >= 1 (or null)",
        ),
        (cfg.eval.batch_size >= 1, "eval.batch_size must be >= 1"),
        (cfg.eval.k >= 0, "eval.k must be >= 0"),
        (cfg.eval.temperature >= 0, "eval.temperature must be >= 0"),
        (0 < cfg.eval.top_p <= 1, "eval.top_p must be in (0, 1]"),
        (
            0 < cfg.rewards.timeout <= MAX_TIMEOUT,
            f"rewards.timeout must be in (0, {MAX_TIMEOUT:g}] seconds",
        ),
        (cfg.run.threads >= 0, "run.threads must be >= 0"),
        (cfg.run.checkpoint_every >= 0, "run.checkpoint_every must be >= 0"),
        (cfg.run.keep_checkpoints >= 1, "run.keep_checkpoints must be >= 1"),
        (
            set(sinks(cfg)) <= {"jsonl", "tensorboard", "wandb"},
            "log.sinks must list only jsonl, tensorboard, wandb",
        ),
        (
            cfg.log.wandb_mode in ("online", "offline", "disabled"),
            "log.wandb_mode must be online, offline or disabled",
        ),
        (cfg.alerts.baseline_steps >= 1, "alerts.baseline_steps must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise DapoError(message)


def recomputes_old_logprobs(cfg: Config) -> bool:
    """Whether the update's old log-probs come from a training forward, not the sampler.

    Asked for, or implied by bfloat16: the sampler decodes one token at a time from a KV
    cache, the update runs whole sequences; in bfloat16 the two differ by up to 0.25 in
    log-prob on SmolLM2 (issue 12; float32: 1e-4), so the sampler's values would put the ratio
    off 1 before any update. A recomputed forward is the update's own, bit for bit.
    """
    return cfg.train.recompute_old_logprobs or cfg.model.dtype == "bfloat16"


def _one_of(names) -> str:
    """("a", "b", "c") -> "a, b or c"."""
    names = list(names)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def sinks(cfg: Config) -> list[str]:
    """The metric sinks to open: ``log.sinks`` with jsonl always first."""
    names = [n.strip() for n in cfg.log.sinks.split(",") if n.strip()]
    return ["jsonl"] + [n for n in dict.fromkeys(names) if n != "jsonl"]


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a saved config (the run directory's config.yaml)."""
    flat = flatten(tree)
    preset = flat.pop("preset", "dapo")
    return build(preset, overrides=flat)


def help_text() -> str:
    lines = []
    for key, f in keys():
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = yaml.safe_dump(default, default_flow_style=True).removesuffix("...\n").strip()
        lines.append(f"  {key:<28} {shown:<22} {f.metadata.get('help', '')}")
    return "\n".join(lines)
