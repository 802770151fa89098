"""Prompt templates: how a problem becomes the user message, and then the model's prompt.

Named templates:
- ``dapo``: the DAPO-Math instruction; the final line must be ``Answer: <answer>``.
- ``dapo_oneshot``: a short ``Answer:`` instruction with one worked example given as a
  previous chat turn. Small instruct models (SmolLM2-135M) almost never end with an
  ``Answer:`` line without an example (``benchmarks/calibrate.py``, sums up to 20 at
  temperature 1.0: 40% correct with this template, 0.6% with ``dapo``).
- ``steps_oneshot``: the ``Answer:`` instruction with a worked example that writes one
  line per operation, so multi-step problems (``data.num_terms`` >= 3) get written steps
  and a tight ``rollout.max_new_tokens`` truncates some correct reasoning: the task on
  which DAPO's length fixes have something to act (``benchmarks/calibrate.py``).
- ``boxed``: reason step by step and put the final answer in ``\\boxed{}``.
- ``plain``: the problem text alone.
- ``auto`` (``data.template``'s default): each example's own choice (``Example.template``):
  ``dapo_oneshot`` for the built-in arithmetic task (its worked example is arithmetic),
  ``plain`` for rows whose prompt is chat messages or built by ``data.prompt_template``
  (they carry their own instructions), ``dapo`` for every other file row.
An example's earlier chat messages (``context``) are kept: system messages first, then the
template's worked example, then the earlier turns, then the problem's user message.
The messages go through the tokenizer's chat template when it has one.
"""

from __future__ import annotations

from collections.abc import Sequence

from dapo_rl.errors import DapoError

_DAPO = (
    "Solve the following math problem step by step. The last line of your response should "
    "be of the form Answer: $Answer (without quotes) where $Answer is the answer to the "
    'problem.\n\n{problem}\n\nRemember to put your answer on its own line after "Answer:".'
)
_ANSWER_LINE = "{problem} End with a line Answer: <number>."
_ONESHOT_EXAMPLE = ("What is 12 + 7?", "12 + 7 = 19.\nAnswer: 19")
_STEPS_EXAMPLE = ("What is 7 + 12 - 5?", "7 + 12 = 19.\n19 - 5 = 14.\nAnswer: 14")
_BOXED = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."

TEMPLATES = {
    "dapo": _DAPO,
    "dapo_oneshot": _ANSWER_LINE,
    "steps_oneshot": _ANSWER_LINE,
    "boxed": _BOXED,
    "plain": "{problem}",
}
AUTO = "auto"
_EXAMPLES = {"dapo_oneshot": [_ONESHOT_EXAMPLE], "steps_oneshot": [_STEPS_EXAMPLE]}


def check_template(template: str) -> None:
    if template != AUTO and template not in TEMPLATES:
        names = ", ".join([AUTO, *TEMPLATES])
        raise DapoError(f"unknown template '{template}': use one of {names}")


def resolve(template: str, example=None) -> str:
    """The named template used for ``example``: ``auto`` becomes the example's own choice."""
    check_template(template)
    if template != AUTO:
        return template
    return getattr(example, "template", None) or "dapo"


def render(
    problem: str, template: str, context: Sequence[tuple[str, str]] = ()
) -> list[dict[str, str]]:
    """The chat messages for ``problem`` under a named template, after ``context``'s system
    messages, the template's worked examples and ``context``'s other turns."""
    fmt = TEMPLATES[resolve(template)]
    messages = [{"role": r, "content": c} for r, c in context if r == "system"]
    for question, answer in _EXAMPLES.get(resolve(template), []):
        messages += [
            {"role": "user", "content": fmt.format(problem=question)},
            {"role": "assistant", "content": answer},
        ]
    messages += [{"role": r, "content": c} for r, c in context if r != "system"]
    return messages + [{"role": "user", "content": fmt.format(problem=problem)}]


def build_prompt(tokenizer, problem, template: str) -> str:
    """Full prompt text: the messages through the chat template, or joined plainly without one.

    ``problem`` is the problem text or an ``Example`` (whose context and own template choice
    are then used)."""
    if isinstance(problem, str):
        messages = render(problem, template)
    else:
        messages = render(problem.problem, resolve(template, problem), problem.context)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages)
