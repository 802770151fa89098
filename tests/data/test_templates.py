"""Prompt templates: each named template's messages, and the chat template applied to them."""

from __future__ import annotations

import pytest

from dapo_rl.data.templates import TEMPLATES, build_prompt, render
from dapo_rl.errors import DapoError

PROBLEM = "What is 3 + 4?"


class FakeChatTokenizer:
    """Stands in for a HF tokenizer with a chat template; records each call."""

    chat_template = "{{ messages }}"

    def __init__(self):
        self.calls = []

    def apply_chat_template(self, messages, **kwargs):
        self.calls.append((messages, kwargs))
        return "".join(f"<|{m['role']}|>{m['content']}" for m in messages) + "<|assistant|>"


class FakePlainTokenizer:
    """A tokenizer without a chat template (a base model)."""

    def __init__(self, chat_template=None):
        self.chat_template = chat_template

    def apply_chat_template(self, messages, **kwargs):
        raise AssertionError("no chat template: must not be applied")


def test_named_templates():
    assert set(TEMPLATES) == {"dapo", "dapo_oneshot", "steps_oneshot", "boxed", "plain"}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_ends_with_the_problem_as_the_user_turn(name):
    messages = render(PROBLEM, name)
    assert messages[-1]["role"] == "user"
    assert messages[-1]["content"].count(PROBLEM) == 1
    # any examples come first, as alternating user / assistant turns
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant"] * ((len(roles) - 1) // 2) + ["user"]
    for m in messages:
        assert set(m) == {"role", "content"}
        assert "{problem}" not in m["content"] and m["content"]
    assert all(PROBLEM not in m["content"] for m in messages[:-1])


def test_single_turn_templates():
    assert render(PROBLEM, "plain") == [{"role": "user", "content": PROBLEM}]
    # '{{}}' in the format string becomes a literal '{}'
    assert render(PROBLEM, "boxed") == [
        {
            "role": "user",
            "content": f"{PROBLEM}\n\nPlease reason step by step, "
            "and put your final answer within \\boxed{}.",
        }
    ]
    (dapo,) = render(PROBLEM, "dapo")
    assert dapo["content"].startswith("Solve the following math problem step by step.")
    assert "Answer: $Answer" in dapo["content"] and f"\n\n{PROBLEM}\n\n" in dapo["content"]


def test_oneshot_gives_a_worked_example_as_a_previous_turn():
    example_q, example_a, question = render(PROBLEM, "dapo_oneshot")
    # the worked example: 12 + 7 = 19, ending with the Answer: line the verifier reads
    assert "12 + 7" in example_q["content"]
    assert example_a["role"] == "assistant"
    assert example_a["content"].splitlines()[-1] == "Answer: 19"
    # the same instruction wraps the example question and the real one
    assert example_q["content"].replace("What is 12 + 7?", PROBLEM) == question["content"]
    assert "Answer:" in question["content"]


def test_steps_oneshot_example_writes_one_line_per_operation():
    example_q, example_a, _ = render(PROBLEM, "steps_oneshot")
    # 7 + 12 = 19, then 19 - 5 = 14: each step checks out and the last line is the answer
    assert "7 + 12 - 5" in example_q["content"]
    lines = example_a["content"].splitlines()
    assert lines == ["7 + 12 = 19.", "19 - 5 = 14.", "Answer: 14"]


def test_braces_in_the_problem_are_kept_verbatim():
    problem = "Find $x$ in $\\{1, 2\\}$ with f{x} = {0}"
    for name in TEMPLATES:
        assert problem in render(problem, name)[-1]["content"]


def test_unknown_template_lists_the_names():
    with pytest.raises(DapoError) as e:
        render(PROBLEM, "chatml")
    message = str(e.value)
    assert "unknown template 'chatml'" in message
    for name in TEMPLATES:
        assert name in message


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_build_prompt_applies_the_chat_template(name):
    tok = FakeChatTokenizer()
    prompt = build_prompt(tok, PROBLEM, name)
    messages = render(PROBLEM, name)
    assert tok.calls == [(messages, {"tokenize": False, "add_generation_prompt": True})]
    assert prompt == ("".join(f"<|{m['role']}|>{m['content']}" for m in messages) + "<|assistant|>")


def test_build_prompt_chat_template_plain_is_the_problem_alone():
    tok = FakeChatTokenizer()
    assert build_prompt(tok, PROBLEM, "plain") == f"<|user|>{PROBLEM}<|assistant|>"


@pytest.mark.parametrize("chat_template", [None, ""])
@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_build_prompt_without_chat_template_joins_the_messages(name, chat_template):
    tok = FakePlainTokenizer(chat_template)
    messages = render(PROBLEM, name)
    assert build_prompt(tok, PROBLEM, name) == "\n\n".join(m["content"] for m in messages)


def test_build_prompt_without_chat_template_single_turn_is_the_message():
    assert build_prompt(object(), PROBLEM, "plain") == PROBLEM
    assert build_prompt(object(), PROBLEM, "dapo") == render(PROBLEM, "dapo")[0]["content"]


def test_build_prompt_unknown_template_raises_before_the_tokenizer():
    tok = FakeChatTokenizer()
    with pytest.raises(DapoError, match="unknown template"):
        build_prompt(tok, PROBLEM, "nope")
    assert tok.calls == []
