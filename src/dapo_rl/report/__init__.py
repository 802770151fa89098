"""Run reports: a self-contained HTML page of plots and tables over one or more runs.

``html`` lays out the page, ``plot`` draws the SVG charts, ``runs`` reads run directories,
``sections`` renders the text tables, ``ablation`` reads and draws ablation results over
seeds, and ``stats`` holds the interval arithmetic they share.
"""

from dapo_rl.report.html import write_report

__all__ = ["write_report"]
