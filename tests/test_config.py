"""Config: presets, build precedence, override parsing, type checks, validate(), YAML files."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dapo_rl import config
from dapo_rl.config import Config, build, from_dict, load_yaml, parse_override, to_dict
from dapo_rl.errors import DapoError

KEYS = [k for k, _ in config.keys()]


def _resolved() -> Config:
    """The defaults as ``build`` returns them: model.dtype=auto resolved (float32 here)."""
    cfg = Config()
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype="float32"))


def _diff(cfg: Config) -> dict:
    """Flattened keys where ``cfg`` differs from the defaults, with cfg's values."""
    base, new = config.flatten(to_dict(_resolved())), config.flatten(to_dict(cfg))
    return {k: v for k, v in new.items() if base[k] != v}


# --- defaults and presets ---------------------------------------------------------------


def test_defaults_are_the_dapo_preset():
    assert Config().model.dtype == "auto"
    cfg = _resolved()
    assert config.PRESETS["dapo"] == {}
    assert build() == cfg
    assert build("dapo") == cfg
    a = cfg.algo
    # DAPO: clip-higher 0.2/0.28, token-level loss, dynamic sampling, overlong shaping, no KL
    assert (a.eps_low, a.eps_high) == (0.2, 0.28)
    assert a.loss_agg == "token_mean"
    assert a.dynamic_sampling and a.overlong_shaping and a.scale_adv
    assert a.kl_coef == 0.0
    assert cfg.preset == "dapo"


def test_grpo_preset_sets_exactly_the_documented_switches():
    # symmetric clip 0.2, per-sequence mean, no dynamic sampling, no overlong shaping, KL 0.04 k3
    cfg = build("grpo")
    assert _diff(cfg) == {
        "algo.eps_high": 0.2,
        "algo.loss_agg": "seq_mean_token_mean",
        "algo.dynamic_sampling": False,
        "algo.overlong_shaping": False,
        "algo.kl_coef": 0.04,
        "preset": "grpo",
    }
    assert cfg.algo.eps_low == cfg.algo.eps_high == 0.2
    assert cfg.algo.kl_kind == "k3"
    assert cfg.algo.scale_adv


def test_dr_grpo_preset_sets_exactly_the_documented_switches():
    # grpo without std scaling, with the constant-length sum, and no KL
    cfg = build("dr_grpo")
    assert _diff(cfg) == {
        "algo.eps_high": 0.2,
        "algo.loss_agg": "seq_mean_token_sum_norm",
        "algo.scale_adv": False,
        "algo.dynamic_sampling": False,
        "algo.overlong_shaping": False,
        "preset": "dr_grpo",
    }
    assert cfg.algo.kl_coef == 0.0


def test_unknown_preset():
    with pytest.raises(DapoError, match=r"unknown preset 'nope'.*dapo.*grpo.*dr_grpo"):
        build("nope")
    with pytest.raises(DapoError, match="unknown preset 'nope'"):
        build(overrides={"preset": "nope"})


# --- build precedence -------------------------------------------------------------------


def test_precedence_defaults_preset_file_overrides():
    cfg = build(
        "grpo",
        file_values={"algo.eps_high": 0.25, "algo.kl_coef": 0.1, "train.steps": 7},
        overrides={"algo.eps_high": 0.3},
    )
    assert cfg.algo.eps_high == 0.3  # override beats file beats preset (0.2)
    assert cfg.algo.kl_coef == 0.1  # file beats preset (0.04)
    assert cfg.train.steps == 7  # file beats default (40)
    assert cfg.algo.loss_agg == "seq_mean_token_mean"  # preset beats default
    assert cfg.train.lr == 1e-5  # default where nobody sets it


def test_preset_named_in_file_and_overridden_on_the_command_line():
    assert build(file_values={"preset": "grpo"}).preset == "grpo"
    assert build(file_values={"preset": "grpo"}).algo.kl_coef == 0.04
    cfg = build(file_values={"preset": "grpo"}, overrides={"preset": "dr_grpo"})
    assert cfg.preset == "dr_grpo" and not cfg.algo.scale_adv and cfg.algo.kl_coef == 0.0


def test_data_path_selects_the_file_task_unless_task_is_given():
    assert build(overrides={"data.path": "x.jsonl"}).data.task == "file"
    cfg = build(file_values={"data.task": "arithmetic"}, overrides={"data.path": "x.jsonl"})
    assert cfg.data.task == "arithmetic"


def test_build_does_not_mutate_its_arguments():
    file_values, overrides = {"preset": "grpo"}, {"preset": "dapo", "train.steps": 3}
    build(file_values=file_values, overrides=overrides)
    assert file_values == {"preset": "grpo"}
    assert overrides == {"preset": "dapo", "train.steps": 3}


# --- overrides and types ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("algo.eps_high=0.28", "algo.eps_high", 0.28),
        ("algo.dual_clip=null", "algo.dual_clip", None),
        ("algo.dual_clip=", "algo.dual_clip", None),
        ("run.dir=runs/x", "run.dir", "runs/x"),
        ("algo.dynamic_sampling=false", "algo.dynamic_sampling", False),
        ("train.steps=12", "train.steps", 12),
        (" train.steps = 12", "train.steps", 12),
        ("model.name=a=b", "model.name", "a=b"),  # split on the first '=' only
        ("data.ops=*", "data.ops", "*"),  # not valid YAML: kept as text
        ("data.ops=-", "data.ops", "-"),  # YAML would read a list [None]: kept as text
        ("run.dir=a: b", "run.dir", "a: b"),  # YAML would read a mapping: kept as text
    ],
)
def test_parse_override(text, key, value):
    k, v = parse_override(text)
    assert k == key
    assert v == value and type(v) is type(value)


def test_override_without_equals_sign():
    with pytest.raises(DapoError, match="'algo.eps_high' is not KEY=VALUE"):
        parse_override("algo.eps_high")


def test_int_becomes_float_for_float_keys():
    cfg = build(overrides=dict([parse_override("algo.eps_high=1")]))
    assert cfg.algo.eps_high == 1.0 and type(cfg.algo.eps_high) is float


def test_exponent_without_dot_is_a_float():
    # YAML 1.1 reads 1e-5 as the string '1e-5'; a float key takes the number
    assert parse_override("train.lr=1e-5") == ("train.lr", "1e-5")
    assert build(overrides={"train.lr": "1e-5"}).train.lr == 1e-5
    assert build(overrides={"algo.dual_clip": "3E0"}).algo.dual_clip == 3.0
    # a string key keeps the text; an int key does not take an exponent
    assert build(overrides={"run.dir": "12e3"}).run.dir == "12e3"
    with pytest.raises(DapoError, match="train.steps: expected int"):
        build(overrides={"train.steps": "1e3"})


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.steps=abc", "config key train.steps: expected int, got 'abc'"),
        ("train.steps=true", "config key train.steps: expected int, got True"),
        ("train.steps=2.5", "config key train.steps: expected int, got 2.5"),
        ("algo.eps_high=true", "config key algo.eps_high: expected float, got True"),
        ("algo.eps_high=abc", "config key algo.eps_high: expected float, got 'abc'"),
        ("algo.dynamic_sampling=1", "config key algo.dynamic_sampling: expected bool, got 1"),
        ("algo.dual_clip=yes", "config key algo.dual_clip: expected float or null, got True"),
        ("run.dir=null", "config key run.dir: expected str, got None"),
        ("run.dir=true", "config key run.dir: expected str, got True"),
    ],
)
def test_type_errors_name_the_key(override, message):
    with pytest.raises(DapoError) as e:
        build(overrides=dict([parse_override(override)]))
    assert str(e.value) == message


def test_unknown_key_suggests_the_closest():
    with pytest.raises(DapoError, match=r"unknown config key 'algo.eps_hgh' \(did you mean "):
        build(overrides={"algo.eps_hgh": 0.3})
    with pytest.raises(DapoError) as e:
        build(overrides={"algo.eps_hgh": 0.3})
    assert "did you mean algo.eps_high?" in str(e.value)
    with pytest.raises(DapoError) as e:
        build(file_values={"zzzzzz": 1})
    assert "unknown config key 'zzzzzz'" in str(e.value) and "did you mean" not in str(e.value)


def test_section_name_alone_is_not_a_key():
    with pytest.raises(DapoError, match="unknown config key 'algo'"):
        build(overrides={"algo": 1})


# --- validate ---------------------------------------------------------------------------

# (overrides, key the message must start with); each row breaks exactly one rule.
RULES = [
    ({"algo.eps_low": -0.1}, "algo.eps_low"),
    ({"algo.eps_low": 1.0}, "algo.eps_low"),
    ({"algo.eps_high": -0.01}, "algo.eps_high"),
    ({"algo.dual_clip": 1.0}, "algo.dual_clip"),
    ({"algo.loss_agg": "seq_mean"}, "algo.loss_agg"),
    ({"algo.norm_len": 0}, "algo.norm_len"),
    ({"algo.adv_eps": -1e-6}, "algo.adv_eps"),
    ({"algo.max_gen_rounds": 0}, "algo.max_gen_rounds"),
    ({"algo.filter_metric": "reward"}, "algo.filter_metric"),  # never the shaped reward
    ({"algo.filter_metric": "score", "algo.predictive_skip": True}, "algo.filter_metric"),
    ({"algo.filter_metric": "score", "algo.retire_after": 2}, "algo.filter_metric"),
    ({"algo.overlong_buffer": 64}, "algo.overlong_buffer"),  # == max_new_tokens 64
    ({"algo.overlong_buffer": 65}, "algo.overlong_buffer"),
    ({"algo.overlong_buffer": 0}, "algo.overlong_buffer"),
    ({"algo.overlong_penalty": -1.0}, "algo.overlong_penalty"),
    ({"algo.kl_coef": -0.1}, "algo.kl_coef"),
    ({"algo.kl_kind": "k4"}, "algo.kl_kind"),
    ({"algo.tis_cap": 0.5, "train.recompute_old_logprobs": True}, "algo.tis_cap"),
    ({"algo.tis_cap": 2.0}, "algo.tis_cap"),  # without recomputed old log-probs
    ({"train.cpu_offload": True}, "train.cpu_offload"),  # without train.fsdp
    ({"rollout.group_size": 1}, "rollout.group_size"),  # dynamic sampling on
    (
        {"rollout.group_size": 1, "algo.dynamic_sampling": False},  # std scaling still on
        "rollout.group_size",
    ),
    (  # Dr. GRPO's switches: r - mean is 0 for a group of one, so it is refused too
        {"rollout.group_size": 1, "algo.dynamic_sampling": False, "algo.scale_adv": False},
        "rollout.group_size",
    ),
    (
        {"rollout.group_size": 0, "algo.dynamic_sampling": False, "algo.scale_adv": False},
        "rollout.group_size",
    ),
    ({"rollout.prompts_per_step": 0}, "rollout.prompts_per_step"),
    (
        {"rollout.max_new_tokens": 0, "algo.overlong_shaping": False},
        "rollout.max_new_tokens",
    ),
    ({"rollout.temperature": -0.5}, "rollout.temperature"),
    ({"rollout.top_p": 0.0}, "rollout.top_p"),
    ({"rollout.top_p": 1.01}, "rollout.top_p"),
    ({"rollout.batch_size": 0}, "rollout.batch_size"),
    ({"rollout.engine": "sglang"}, "rollout.engine"),
    ({"rollout.engine": "vllm"}, "rollout.engine"),  # without recomputed old log-probs
    (
        {
            "rollout.engine": "vllm",
            "model.name": "tiny-random",
            "train.recompute_old_logprobs": True,
        },
        "rollout.engine",
    ),
    ({"rollout.vllm_memory": 0.0}, "rollout.vllm_memory"),
    ({"rollout.vllm_memory": 1.5}, "rollout.vllm_memory"),
    ({"rollout.vllm_tp": 0}, "rollout.vllm_tp"),
    ({"rollout.vllm_sleep_level": 3}, "rollout.vllm_sleep_level"),
    ({"rollout.vllm_max_prompt_tokens": 0}, "rollout.vllm_max_prompt_tokens"),
    ({"algo.skip_target_zero_var": 1.5}, "algo.skip_target_zero_var"),
    ({"algo.skip_explore_min": 0.0}, "algo.skip_explore_min"),
    ({"algo.skip_explore_init": 0.01}, "algo.skip_explore_init"),  # below the minimum
    ({"algo.skip_explore_init": 1.5}, "algo.skip_explore_init"),
    ({"algo.skip_explore_step": -0.1}, "algo.skip_explore_step"),
    ({"algo.retire_after": -1}, "algo.retire_after"),
    ({"train.steps": -1}, "train.steps"),
    ({"train.lr": 0.0}, "train.lr"),
    ({"train.warmup_steps": -1}, "train.warmup_steps"),
    ({"train.weight_decay": -0.01}, "train.weight_decay"),
    ({"train.max_grad_norm": 0.0}, "train.max_grad_norm"),
    ({"train.mini_batches_per_step": 0}, "train.mini_batches_per_step"),
    ({"train.micro_batch_size": 0}, "train.micro_batch_size"),
    ({"train.max_tokens_per_micro_batch": -1}, "train.max_tokens_per_micro_batch"),
    ({"train.logits_chunk": -1}, "train.logits_chunk"),
    ({"train.max_skipped_steps": -1}, "train.max_skipped_steps"),
    ({"model.dtype": "float16"}, "model.dtype"),
    ({"model.lora_rank": -1}, "model.lora_rank"),
    ({"model.lora_alpha": 0.0}, "model.lora_alpha"),
    ({"data.task": "chess"}, "data.task"),
    ({"data.task": "file"}, "data.task"),  # file task without data.path
    ({"data.template": "fancy"}, "data.template"),
    ({"train.lr_schedule": "step"}, "train.lr_schedule"),
    ({"train.min_lr_ratio": 1.5}, "train.min_lr_ratio"),
    ({"data.min_value": 0}, "data.min_value"),
    ({"data.min_value": 5, "data.max_value": 4}, "data.min_value"),
    ({"data.num_terms": 1}, "data.num_terms"),
    ({"data.ops": ""}, "data.ops"),
    ({"data.ops": "+/"}, "data.ops"),
    ({"eval.every": -1}, "eval.every"),
    ({"eval.size": 0}, "eval.size"),
    ({"eval.max_new_tokens": 0}, "eval.max_new_tokens"),
    ({"eval.batch_size": 0}, "eval.batch_size"),
    ({"eval.k": -1}, "eval.k"),
    ({"eval.temperature": -0.1}, "eval.temperature"),
    ({"eval.top_p": 0.0}, "eval.top_p"),
    ({"eval.top_p": 1.5}, "eval.top_p"),
    ({"rewards.timeout": 0.0}, "rewards.timeout"),
    ({"rewards.timeout": 1e6}, "rewards.timeout"),  # beyond a day
    ({"data.template": "nope"}, "data.template"),
    ({"run.checkpoint_every": -1}, "run.checkpoint_every"),
    ({"run.keep_checkpoints": 0}, "run.keep_checkpoints"),
    ({"run.threads": -1}, "run.threads"),
    ({"log.sinks": "jsonl,csv"}, "log.sinks"),
    ({"log.wandb_mode": "cloud"}, "log.wandb_mode"),
    ({"alerts.baseline_steps": 0}, "alerts.baseline_steps"),
]


@pytest.mark.parametrize("overrides, key", RULES, ids=[str(o) for o, _ in RULES])
def test_each_rule_fires_naming_its_key(overrides, key):
    with pytest.raises(DapoError) as e:
        build(overrides=overrides)
    message = str(e.value)
    assert re.match(re.escape(key) + r"[ =]", message), message
    assert "\n" not in message


def test_every_rule_is_exercised():
    # every key that a message in validate() names must appear in RULES
    keys = set(
        re.findall(r'"([a-z_]+\.[a-z_]+) (?:must|needs)', inspect.getsource(config.validate))
    )
    assert len(keys) >= 30  # the pattern still finds the rules
    assert keys <= {key for _, key in RULES}


FLOAT_KEYS = [k for k, f in config.keys() if float in config._allowed_types(f.type)]
NOT_FINITE = [float("inf"), float("-inf"), float("nan"), 1e39, -1e39]  # 1e39: inf in float32


def test_float_keys_are_found():
    assert {"train.lr", "rollout.temperature", "algo.adv_eps", "algo.overlong_penalty"} <= set(
        FLOAT_KEYS
    )
    assert {"algo.kl_coef", "rewards.timeout", "algo.dual_clip", "algo.tis_cap"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("value", NOT_FINITE, ids=str)
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_every_float_key_refuses_what_is_not_finite_in_float32(key, value):
    with pytest.raises(DapoError) as e:
        build(overrides={key: value})
    message = str(e.value)
    assert message.startswith(f"{key} must be a finite number"), message
    assert "\n" not in message


@pytest.mark.parametrize("text", [".inf", "-.inf", ".nan", ".NaN", "1e39", "1.0e+39"])
def test_yaml_spellings_of_infinity_are_refused(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(f"train:\n  lr: {text}\n")
    with pytest.raises(DapoError, match=r"^train.lr must be a finite number"):
        build(file_values=load_yaml(path))
    with pytest.raises(DapoError, match=r"^train.lr must be a finite number"):
        build(overrides=dict([parse_override(f"train.lr={text}")]))


def test_allowed_names_come_from_the_modules_that_own_them():
    from dapo_rl.algo.filtering import FILTER_METRICS
    from dapo_rl.algo.losses import AGGREGATION_MODES, KL_KINDS
    from dapo_rl.data.templates import TEMPLATES

    for key, names in [
        ("algo.loss_agg", AGGREGATION_MODES),
        ("algo.kl_kind", KL_KINDS),
        ("algo.filter_metric", FILTER_METRICS),
        ("data.template", TEMPLATES),
    ]:
        for name in names:
            build(overrides={key: name})
        with pytest.raises(DapoError, match=re.escape(f"{key} must be")) as e:
            build(overrides={key: "nonesuch"})
        assert all(name in str(e.value) for name in names)


@pytest.mark.parametrize(
    "overrides",
    [
        {"algo.eps_low": 0.0, "algo.eps_high": 0.0},  # both bounds are inclusive at 0
        {"algo.dual_clip": 1.5},
        {"algo.filter_metric": "score"},
        {"algo.tis_cap": 2.0, "model.dtype": "bfloat16"},  # bf16 recomputes old log-probs
        {"algo.overlong_buffer": 63},  # 0 < 63 < 64
        {"algo.overlong_shaping": False, "algo.overlong_buffer": 999},  # unchecked when off
        {"rollout.group_size": 2, "algo.dynamic_sampling": False, "algo.scale_adv": False},
        {"rollout.top_p": 1.0, "rollout.temperature": 0.0},
        {"data.min_value": 3, "data.max_value": 3, "data.ops": "+-*"},
        {"train.steps": 0, "eval.every": 0, "run.checkpoint_every": 0},
    ],
)
def test_boundaries_that_are_allowed(overrides):
    build(overrides=overrides)


# --- YAML files -------------------------------------------------------------------------


def test_load_yaml_nested_and_dotted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "preset: grpo\n"
        "algo:\n  eps_high: 0.3\n  dual_clip: null\n"
        "train.steps: 5\n"
        "train:\n  lr: 1.0e-4\n"
    )
    values = load_yaml(path)
    assert values == {
        "preset": "grpo",
        "algo.eps_high": 0.3,
        "algo.dual_clip": None,
        "train.steps": 5,
        "train.lr": 1e-4,
    }
    cfg = build(file_values=values)
    assert (cfg.preset, cfg.algo.eps_high, cfg.train.steps, cfg.train.lr) == (
        "grpo",
        0.3,
        5,
        1e-4,
    )


def test_load_yaml_empty_file_is_no_values(tmp_path):
    (tmp_path / "e.yaml").write_text("# nothing\n")
    assert load_yaml(tmp_path / "e.yaml") == {}


def test_load_yaml_malformed_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    # line 3 is indented deeper than line 2 inside the same mapping: "mapping values are
    # not allowed here" at line 3
    path.write_text("train:\n  steps: 3\n   lr: 2\n")
    with pytest.raises(DapoError) as e:
        load_yaml(path)
    assert str(e.value) == f"config file {path} line 3: not valid YAML"


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("42\n", "int")])
def test_load_yaml_not_a_mapping(tmp_path, text, kind):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(DapoError, match=f"expected a mapping of keys, got {kind}"):
        load_yaml(path)


def test_load_yaml_missing_file(tmp_path):
    with pytest.raises(DapoError, match=r"cannot read config file .*missing\.yaml"):
        load_yaml(tmp_path / "missing.yaml")


def test_load_yaml_exponent_float_reaches_the_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 3e-6\n")
    assert build(file_values=load_yaml(path)).train.lr == 3e-6


# --- help, round trip -------------------------------------------------------------------


def test_help_text_lists_every_key_with_its_help():
    text = config.help_text()
    listed = [line.split()[0] for line in text.splitlines()]
    assert listed == KEYS
    for key, f in config.keys():
        assert f.metadata.get("help"), f"{key} has no help"
        assert f.metadata["help"] in text
    assert len(KEYS) == len(set(KEYS)) and "algo.eps_high" in KEYS and "preset" in KEYS


def test_keys_cover_every_leaf_field():
    expected = sum(
        len(dataclasses.fields(f.default_factory))
        if f.default_factory is not dataclasses.MISSING
        else 1
        for f in dataclasses.fields(Config)
    )
    assert len(KEYS) == expected


@pytest.mark.parametrize("preset", sorted(config.PRESETS))
def test_round_trip(preset):
    cfg = build(
        preset,
        overrides={"data.path": "d.jsonl", "algo.dual_clip": 3.0, "train.lr": 1e-5},
    )
    assert from_dict(to_dict(cfg)) == cfg


# --- property: any scalar for any key builds or raises DapoError ------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["dapo", "grpo", "dr_grpo", "+-", "k1", "file", "bfloat16", "1e-3"])
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), _SCALARS, max_size=6))
def test_random_values_build_or_raise_dapo_error(values):
    try:
        cfg = build(overrides=values)
    except DapoError as e:
        assert str(e) and "\n" not in str(e)
        return
    for key in KEYS:
        section, _, name = key.rpartition(".")
        value = getattr(getattr(cfg, section), name) if section else getattr(cfg, name)
        if isinstance(value, float):
            assert not math.isnan(value), key  # NaN fails every range check
    assert from_dict(to_dict(cfg)) == cfg


# --- hostile config files -----------------------------------------------------------------


def _alias_bomb() -> str:
    """338 bytes that safe_load turns into 9^9 = 387 million strings once repr'd."""
    parts = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        parts.append(f"&{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "train:\n  lr: [" + ", ".join(parts) + "]\n"


@pytest.mark.parametrize(
    "text, message",
    [
        (_alias_bomb(), "line 2: YAML aliases (*name) are not allowed"),
        ("a: &x {b: *x}\n", "line 1: YAML aliases (*name) are not allowed"),
        ("train:\n  lr: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
    ids=["alias-bomb", "self-alias", "deep-nesting"],
)
def test_hostile_yaml_is_one_error_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(DapoError) as e:
        load_yaml(path)
    assert str(e.value).startswith(f"config file {path}") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_a_config_that_is_not_a_small_regular_file_is_refused(tmp_path):
    import os

    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (config.MAX_CONFIG_BYTES // 10 + 1))
    for path in (fifo, big):
        with pytest.raises(DapoError, match="not a regular file of at most 1 MiB"):
            load_yaml(path)


def test_a_long_wrong_value_is_shown_shortened():
    with pytest.raises(DapoError) as e:
        build(overrides={"train.lr": list(range(100_000))})
    assert len(str(e.value)) < 200


@pytest.mark.parametrize(("units", "dtype"), [(True, "bfloat16"), (False, "float32")])
def test_auto_dtype_is_bf16_only_on_bf16_matrix_units(monkeypatch, units, dtype):
    from dapo_rl import perf

    monkeypatch.setattr(perf, "has_bf16_units", lambda: units)
    cfg = config.build(overrides={"model.dtype": "auto"})
    assert cfg.model.dtype == dtype  # the saved config names the dtype it ran in
    assert config.to_dict(cfg)["model"]["dtype"] == dtype


def test_has_bf16_units_reads_the_cpu_flags(monkeypatch):
    from dapo_rl import perf

    monkeypatch.delenv("DAPO_RL_BF16_UNITS")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for amx in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        assert perf.has_bf16_units() is amx


def test_bf16_units_env_overrides_detection(monkeypatch):
    from dapo_rl import perf

    for value, units in (("0", False), ("1", True)):
        monkeypatch.setenv("DAPO_RL_BF16_UNITS", value)
        assert perf.has_bf16_units() is units
