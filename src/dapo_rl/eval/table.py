"""Evaluation results as text: an aligned console table and a markdown table.

Plain text on purpose (no rich dependency). Rates and accuracies print with 4 decimals,
mean lengths and wall times with 1, counts as integers.
"""

from __future__ import annotations

SETTINGS = (
    "model",
    "data",
    "name",
    "format",
    "verifier",
    "template",
    "max_new_tokens",
    "k",
    "temperature",
    "top_p",
    "seed",
)


def cell(key: str, value) -> str:
    """One value as text: ``len_mean`` 31.25 -> "31.2", ``acc`` 0.5 -> "0.5000"."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if key.startswith(("len_", "wall")) else f"{value:.4f}"
    return str(value)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Aligned columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join(
            [first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))]
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def result_table(result: dict) -> str:
    """``run_file``'s result for the console: the settings, then one row per metric."""
    settings = [f"{key}: {result[key]}" for key in SETTINGS if key in result]
    metrics = [[key, cell(key, value)] for key, value in result.items() if key not in SETTINGS]
    return "\n".join(settings) + "\n\n" + text_table(["metric", "value"], metrics)
