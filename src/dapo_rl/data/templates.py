"""Prompt templates: how a problem becomes the user message, and then the model's prompt.

Named templates:
- ``dapo``: the DAPO-Math instruction; the final line must be ``Answer: <answer>``.
- ``dapo_oneshot``: the same instruction plus one worked example of the format. Small
  instruct models (SmolLM2-135M) almost never end with an ``Answer:`` line without it.
- ``boxed``: reason step by step and put the final answer in ``\\boxed{}``.
- ``plain``: the problem text alone.
The user message goes through the tokenizer's chat template when it has one.
"""

from __future__ import annotations

from dapo_rl.errors import DapoError

_DAPO = (
    "Solve the following math problem step by step. The last line of your response should "
    "be of the form Answer: $Answer (without quotes) where $Answer is the answer to the "
    'problem.\n\n{problem}\n\nRemember to put your answer on its own line after "Answer:".'
)
_ONESHOT = (
    "Solve the math problem. End your response with a line of the form Answer: <number>.\n\n"
    "Example:\nProblem: What is 12 + 7?\nSolution: 12 + 7 = 19.\nAnswer: 19\n\n"
    "Problem: {problem}\nSolution:"
)
_BOXED = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."

TEMPLATES = {"dapo": _DAPO, "dapo_oneshot": _ONESHOT, "boxed": _BOXED, "plain": "{problem}"}


def render(problem: str, template: str) -> str:
    """The user message for ``problem`` under a named template."""
    if template not in TEMPLATES:
        raise DapoError(f"unknown template '{template}': use one of {', '.join(TEMPLATES)}")
    return TEMPLATES[template].format(problem=problem)


def build_prompt(tokenizer, problem: str, template: str) -> str:
    """Full prompt text: the rendered message through the chat template, if there is one."""
    message = render(problem, template)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
    return message
