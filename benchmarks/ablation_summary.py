"""One table of every fix against what the paper says it does, from several ablations.

    python benchmarks/ablation_summary.py runs/headline-tight runs/ch-tight runs/tl-tight \\
        runs/ds-tight runs/ol-tight --name tight

Each argument is the ``--out`` folder of a finished ``dapo ablate`` (its ``ablation.json``).
Copies every ``ablation.json`` and ``ablation.md`` to
``benchmarks/results/ablation_<folder name>.{json,md}`` and writes the verdicts of all
of them (``dapo_rl.ablate.verdicts``: the fix's row against the fix off, paired by seed,
with a 95% interval) as ``benchmarks/results/ablation_fixes_<name>.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from dapo_rl.ablate import verdict_table

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="dapo ablate --out folders")
    p.add_argument("--name", required=True, help="names the summary: ablation_fixes_<name>.md")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    sections = []
    for folder in args.folders:
        path = folder / "ablation.json"
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            return 2
        exp, task = result["experiment"], result.get("task", "?")
        stem = args.results / f"ablation_{folder.name}"
        shutil.copyfile(path, stem.with_suffix(".json"))
        shutil.copyfile(folder / "ablation.md", stem.with_suffix(".md"))
        head = f"### {exp} on the {task} task: `{folder.name}` ({len(result['seeds'])} seeds)"
        sections.append(head + "\n\n" + verdict_table(result.get("verdicts", [])))
    out = args.results / f"ablation_fixes_{args.name}.md"
    out.write_text("\n".join(sections))
    print(out.read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
