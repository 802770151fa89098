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
The user message goes through the tokenizer's chat template when it has one.
"""

from __future__ import annotations

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
_EXAMPLES = {"dapo_oneshot": [_ONESHOT_EXAMPLE], "steps_oneshot": [_STEPS_EXAMPLE]}


def render(problem: str, template: str) -> list[dict[str, str]]:
    """The chat messages for ``problem`` under a named template (examples first)."""
    if template not in TEMPLATES:
        raise DapoError(f"unknown template '{template}': use one of {', '.join(TEMPLATES)}")
    fmt = TEMPLATES[template]
    messages = []
    for question, answer in _EXAMPLES.get(template, []):
        messages += [
            {"role": "user", "content": fmt.format(problem=question)},
            {"role": "assistant", "content": answer},
        ]
    return messages + [{"role": "user", "content": fmt.format(problem=problem)}]


def build_prompt(tokenizer, problem: str, template: str) -> str:
    """Full prompt text: the messages through the chat template, or joined plainly without one."""
    messages = render(problem, template)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages)
