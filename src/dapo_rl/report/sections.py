"""The report's tables of text: alerts that fired, config keys that differ, samples.

Every value here comes from a run directory (alert text, config values, a model's prompts
and completions) and is escaped with ``html.escape`` before it reaches the page.
"""

from __future__ import annotations

import json
from html import escape

from dapo_rl.report.runs import Run, alert_kind, alerts_of, config_diff

MAX_PROMPT_CHARS = 600
MAX_COMPLETION_CHARS = 3000


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def alerts_table(runs: list[Run]) -> str:
    """One row per run and alert rule: the steps it fired at, and its first message."""
    rows = []
    for run in runs:
        kinds: dict[str, list[tuple[float, str]]] = {}
        for step, text in alerts_of(run):
            kinds.setdefault(alert_kind(text), []).append((step, text))
        for fired in kinds.values():
            steps = sorted({s for s, _ in fired})
            span = f"{steps[0]:g}" if len(steps) == 1 else f"{steps[0]:g}–{steps[-1]:g}"
            rows.append(
                f"<tr><td>{escape(run.label)}</td><td>{span}</td><td>{len(steps)}</td>"
                f'<td class="text">{escape(fired[0][1])}</td></tr>'
            )
    if not rows:
        return "<p>No alert fired.</p>"
    head = '<tr><th>run</th><th>steps</th><th>times</th><th class="text">first message</th></tr>'
    return "\n".join(["<table>", head, *rows, "</table>"])


def config_table(runs: list[Run]) -> str:
    """The config keys whose values differ between runs (all other keys are equal)."""
    with_config = [r for r in runs if r.config]
    if len(with_config) < 2:
        return "<p>Fewer than two runs have a config.yaml: nothing to compare.</p>"
    keys = config_diff(with_config)
    if not keys:
        return "<p>The configs are identical (apart from run.dir).</p>"
    head = "".join(f"<th>{escape(r.label)}</th>" for r in with_config)
    rows = ["<table>", f"<tr><th>key</th>{head}</tr>"]
    for key in keys:
        cells = "".join(f"<td>{escape(r.config.get(key, '-'))}</td>" for r in with_config)
        rows.append(f'<tr class="diff"><td>{escape(key)}</td>{cells}</tr>')
    rows.append("</table>")
    return "\n".join(rows)


def _flag(value) -> str:
    return "-" if value is None else escape(str(value))


def samples_section(runs: list[Run]) -> str:
    """Each run's sample completions of its first and last sampled step; "" if none has any."""
    parts = []
    for run in runs:
        if not run.samples:
            continue
        rows = [
            '<table class="samples"><tr><th>step</th><th>reward</th><th>acc</th>'
            "<th>length</th><th>truncated</th><th>prompt</th><th>completion</th></tr>"
        ]
        for s in run.samples:
            prompt = s["prompt"] if isinstance(s["prompt"], str) else json.dumps(s["prompt"])
            rows.append(
                f"<tr><td>{s['step']:g}</td><td>{_flag(s['reward'])}</td>"
                f"<td>{_flag(s['acc'])}</td><td>{_flag(s['length'])}</td>"
                f"<td>{_flag(s['truncated'])}</td>"
                f'<td class="text"><pre>{escape(_clip(prompt, MAX_PROMPT_CHARS))}</pre></td>'
                f'<td class="text"><pre>{escape(_clip(s["completion"], MAX_COMPLETION_CHARS))}'
                "</pre></td></tr>"
            )
        rows.append("</table>")
        parts.append(
            f"<details open><summary>{escape(run.label)}: {len(run.samples)} completions "
            f"of the first and last sampled step</summary>{''.join(rows)}</details>"
        )
    return "\n".join(parts)


def configs_section(runs: list[Run]) -> str:
    """Each run's full resolved config (dotted keys), folded."""
    parts = []
    for run in runs:
        if run.config:
            text = "\n".join(f"{k}: {v}" for k, v in run.config.items())
            parts.append(
                f"<details><summary>{escape(run.label)}: {escape(str(run.path / 'config.yaml'))}"
                f"</summary><pre>{escape(text)}</pre></details>"
            )
    return "\n".join(parts)
