"""Model families whose forward post-processes the LM head's logits (Gemma-2 soft-capping,
Granite ``logits_scaling``, Cohere ``logit_scale``): the training forward, which calls the
decoder and the head itself, gives the log-probs of the model's own forward."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dapo_rl.errors import DapoError
from dapo_rl.models import logits_transform
from dapo_rl.rollout import Rollout
from dapo_rl.train import logprobs
from dapo_rl.train.logprobs import completion_logprobs

V = 128
SMALL = dict(
    vocab_size=V,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    pad_token_id=0,
)


def _model(family: str):
    import transformers as tf

    configs = {
        "gemma2": lambda: tf.Gemma2Config(**SMALL, final_logit_softcapping=1.5),
        "granite": lambda: tf.GraniteConfig(**SMALL, logits_scaling=8.0),
        "cohere": lambda: tf.CohereConfig(**SMALL, logit_scale=0.0625),
    }
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(configs[family]()).eval()
    with torch.no_grad():  # larger logits, so that the post-processing matters
        model.get_output_embeddings().weight.mul_(30.0)
    return model


def _batch(group: int = 3) -> Rollout:
    """Two groups: left-padded prompts of 5 and 3 tokens, completions of up to 6."""
    g = torch.Generator().manual_seed(0)
    rows, tp, tc = 2 * group, 5, 6
    pm, cm = torch.zeros(rows, tp, dtype=torch.long), torch.zeros(rows, tc, dtype=torch.long)
    pids = torch.zeros(rows, tp, dtype=torch.long)
    for k, plen in enumerate((5, 3)):
        prompt = torch.randint(1, V, (plen,), generator=g)
        for j in range(group):
            pids[k * group + j, tp - plen :], pm[k * group + j, tp - plen :] = prompt, 1
    lens = torch.tensor([6, 4, 2, 5, 6, 1])
    for i, n in enumerate(lens.tolist()):
        cm[i, :n] = 1
    cids = torch.randint(1, V, (rows, tc), generator=g) * cm
    return Rollout(pids, pm, cids, cm, torch.zeros(rows, tc), lens, lens == tc)


def _reference(model, b: Rollout) -> torch.Tensor:
    """log_softmax of ``model(...).logits`` at the positions predicting completion tokens."""
    ids = torch.cat([b.prompt_ids, b.completion_ids], 1)
    attn = torch.cat([b.prompt_mask, b.mask], 1)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    tp, tc = b.prompt_ids.shape[1], b.completion_ids.shape[1]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits
    logp = torch.log_softmax(logits[:, tp - 1 : tp - 1 + tc].float(), -1)
    return logp.gather(-1, b.completion_ids[..., None])[..., 0]


@pytest.mark.parametrize("family", ["gemma2", "granite", "cohere"])
@pytest.mark.parametrize("kw", [{}, {"share_prompt": True, "logits_chunk": 5}])
def test_training_logprobs_equal_the_models_own_forward(family, kw):
    model, b = _model(family), _batch()
    assert logits_transform(model.config) is not None
    m = b.mask.bool()
    with torch.no_grad():
        got, _ = completion_logprobs(model, b, temperature=1.0, **kw)
    want = _reference(model, b)
    assert float((got - want)[m].abs().max()) < 1e-5


@pytest.mark.parametrize("family", ["gemma2", "granite", "cohere"])
def test_negative_control_without_the_transform_the_logprobs_differ(family, monkeypatch):
    model, b = _model(family), _batch()
    monkeypatch.setattr(logprobs, "logits_transform", lambda config: None)
    with torch.no_grad():
        got, _ = completion_logprobs(model, b, temperature=1.0)
    assert float((got - _reference(model, b))[b.mask.bool()].abs().max()) > 0.05


def test_transform_hand_computed():
    x = torch.tensor([0.0, 3.0, -6.0])
    cap = logits_transform(SimpleNamespace(final_logit_softcapping=3.0))
    assert torch.allclose(cap(x), 3.0 * torch.tanh(x / 3.0))  # 0, 3 tanh 1, -3 tanh 2
    assert cap(x)[1] == pytest.approx(2.2848, abs=1e-4)
    assert logits_transform(SimpleNamespace(logits_scaling=4.0))(x).tolist() == [0.0, 0.75, -1.5]
    assert logits_transform(SimpleNamespace(logit_scale=0.5))(x).tolist() == [0.0, 1.5, -3.0]
    assert logits_transform(SimpleNamespace(logit_scale=1.0)) is None
    assert logits_transform(SimpleNamespace()) is None


def test_a_model_with_other_logit_post_processing_is_refused():
    config = SimpleNamespace(model_type="mystery", output_multiplier=2.0)
    with pytest.raises(DapoError, match="output_multiplier"):
        logits_transform(config)
