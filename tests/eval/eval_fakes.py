"""A scripted engine and tokenizer: ``core.evaluate`` on known completions, exact and fast.

A completion is written ``(text, length, truncated)``. The engine turns it into a Rollout
row whose first token decodes to ``text`` and whose other ``length - 1`` tokens decode to
nothing, so lengths and truncation are whatever the script says.
"""

from __future__ import annotations

import torch

from dapo_rl.rollout import Rollout

BLANK = 0  # the token id that decodes to ""


class FakeTokenizer:
    """Token 0 is blank; token i > 0 decodes to ``texts[i - 1]``. No chat template."""

    chat_template = None

    def __init__(self):
        self.texts: list[str] = []

    def token(self, text: str) -> int:
        self.texts.append(text)
        return len(self.texts)

    def batch_decode(self, seqs, skip_special_tokens=True):
        return ["".join(self.texts[t - 1] for t in s.tolist() if t != BLANK) for s in seqs]


class FakeEngine:
    """Replays scripts: ``greedy[problem]`` at temperature 0, else ``samples[problem][:n]``.

    With the ``plain`` template a prompt is the problem text itself. ``calls`` records the
    sampling arguments of every ``generate``.
    """

    def __init__(self, tokenizer: FakeTokenizer, greedy: dict, samples: dict | None = None):
        self.tokenizer, self.greedy, self.samples = tokenizer, greedy, samples or {}
        self.calls: list[dict] = []

    def generate(self, prompts, *, n=1, max_new_tokens, temperature=1.0, top_p=1.0, **kw):
        self.calls.append({"n": n, "temperature": temperature, "top_p": top_p, **kw})
        rows = []
        for p in prompts:
            rows += [self.greedy[p]] if temperature == 0 else self.samples[p][:n]
        assert len(rows) == len(prompts) * n
        width = max(length for _, length, _ in rows)
        ids = torch.full((len(rows), width), BLANK)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (text, length, _) in enumerate(rows):
            ids[i, 0] = self.tokenizer.token(text)
            mask[i, :length] = 1
        return Rollout(
            prompt_ids=torch.ones(len(rows), 1, dtype=torch.long),
            prompt_mask=torch.ones(len(rows), 1, dtype=torch.long),
            completion_ids=ids,
            mask=mask,
            logp=torch.zeros(len(rows), width),
            lengths=mask.sum(1),
            truncated=torch.tensor([t for _, _, t in rows]),
        )
