"""Run reports: a self-contained HTML page of plots and tables over one or more runs."""

from dapo_rl.report.html import write_report

__all__ = ["write_report"]
