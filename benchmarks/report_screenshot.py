"""The report screenshot in docs/: real runs, rendered by headless Chromium.

    PYTHONPATH=src:tests/train python benchmarks/report_screenshot.py

Three runs: the two 50-step SmolLM2 runs of the sampler benchmark (``benchmarks/sampling.py
--steps 50 --eval-every 10 -- run.checkpoint_every=0`` on one H100; their metrics are
committed in benchmarks/results/) and a 6-step CPU run of the tiny random model, whose
entropy near 10.8 is what a shared axis would flatten the trained runs' entropy against.
The benchmark kept no config.yaml, so each arm's config is resolved again here from its
arguments by the current code. Writes ``--work``/report.html and the PNG (``--out``),
cut below the page's end and reduced to a 128-colour palette with Pillow where it is
installed, to stay small.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from dapo_rl.config import build, parse_override, to_dict
from dapo_rl.report import write_report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from learning import run_train  # noqa: E402  (the same dapo train invocation)
from sampling import ARMS  # noqa: E402

BENCH_ARGS = ["train.steps=50", "eval.every=10", "run.checkpoint_every=0"]
TINY = [
    "model.name=tiny-random",
    "train.steps=6",
    "rewards.fn=toy_rewards:length_parity",
    "rollout.group_size=4",
    "rollout.prompts_per_step=2",
    "rollout.max_new_tokens=8",
    "algo.overlong_buffer=4",
    "eval.size=4",
    "eval.every=3",
    "train.micro_batch_size=4",
    "train.lr=1e-3",
    "run.checkpoint_every=0",
]


def arm_dir(work: Path, name: str) -> Path:
    """A run directory holding the committed metrics of one sampler-benchmark arm."""
    run = work / name
    run.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / f"benchmarks/results/sampling_{name}.metrics.jsonl", run / "metrics.jsonl")
    args = dict(parse_override(o) for o in [*BENCH_ARGS, *ARMS[name]])
    cfg = build(overrides={**args, "run.dir": str(run)})
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return run


def screenshot(page: Path, png: Path, width: int, height: int) -> None:
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--hide-scrollbars",
            f"--user-data-dir={png.parent / '.chromium-profile'}",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
    )
    try:
        import numpy as np
        from PIL import Image
    except ImportError:
        return
    with Image.open(png) as im:
        px = np.asarray(im.convert("RGB"))
    used = np.nonzero((px < 250).any(axis=(1, 2)))[0]  # drop the blank space below the page
    page = Image.fromarray(px[: used.max() + 24])
    page.quantize(128).save(png, optimize=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("runs/report_demo"))
    p.add_argument("--out", type=Path, default=ROOT / "docs/report.png")
    p.add_argument("--height", type=int, default=5000, help="pixels of the page captured")
    args = p.parse_args()
    runs = [arm_dir(args.work, "plain"), arm_dir(args.work, "sampler")]
    tiny = args.work / "tiny_random"
    if not (tiny / "metrics.jsonl").exists():
        run_train(tiny, TINY)
    page = write_report(
        [*runs, tiny], args.work / "report.html", labels=["plain", "sampler", "tiny-random"]
    )
    shot = args.work / "shot.png"
    screenshot(page, shot, 1240, args.height)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, args.out)
    print(f"{page}\n{args.out}: {args.out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
