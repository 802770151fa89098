"""Synthetic run directories for the report tests, and a PNG decoder for the render test."""

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np

HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"


def write_run(
    run_dir: Path,
    steps: int,
    slope: float,
    drop: tuple[str, ...] = (),
    entropy: float = 0.9,
    alert_at: tuple[int, ...] = (),
) -> Path:
    """A synthetic run: step 0 eval, then training steps with evals every 5 steps."""
    run_dir.mkdir(parents=True)
    records = [{"step": 0, "eval/acc": 0.2, "eval/n": 50}]
    for s in range(1, steps + 1):
        r = {
            "step": s,
            "reward/mean": -0.6 + slope * s,
            "acc/mean": 0.2 + slope * s / 2,
            "entropy/mean": entropy * math.exp(-s / 20),
            "len/mean": 40 + 20 * slope * s,
            "len/truncated_frac": max(0.0, 0.05 - slope * s / 10),
            "clip/high_frac": 0.002 + 1e-4 * s,
            "clip/low_frac": 0.001,
            "ds/zero_var_frac": 0.6 - slope * s,
            "ds/all_correct_frac": 0.1,
            "ds/all_wrong_frac": 0.5 - slope * s,
            "grad/norm": 1.0 + 0.1 * s,
            "time/generate": 2.0,
            "time/update": 1.0,
            "time/step": 4.0,
        }
        if s % 5 == 0:
            r["eval/acc"] = 0.2 + slope * s
        if s in alert_at:
            r["alerts"] = [f"entropy fell to {0.01 * s:.3g}, 20% of its early mean <b>"]
        records.append({k: v for k, v in r.items() if k not in drop})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def read_png(path: Path) -> np.ndarray:
    """Pixels (H, W, channels) of a PNG: with Pillow where it is installed (fast), else with
    ``decode_png`` (pure Python: about 30 s for a 1240 x 2400 screenshot)."""
    try:
        from PIL import Image
    except ImportError:
        return decode_png(path.read_bytes())
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def decode_png(data: bytes) -> np.ndarray:
    """Pixels (H, W, channels) of an 8-bit RGB/RGBA non-interlaced PNG; zlib + unfiltering."""
    pos, idat, head = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = head
    assert depth == 8 and color in (2, 6) and interlace == 0, head
    ch = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * ch
    prev, rows = bytearray(stride), []
    for y in range(height):
        f, cur = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        if f == 1:  # Sub
            for i in range(ch, stride):
                cur[i] = (cur[i] + cur[i - ch]) & 255
        elif f == 2:  # Up
            cur = bytearray((a + b) & 255 for a, b in zip(cur, prev, strict=True))
        elif f in (3, 4):  # Average, Paeth
            for i in range(stride):
                a, b = (cur[i - ch] if i >= ch else 0), prev[i]
                if f == 3:
                    pred = (a + b) >> 1
                else:
                    c = prev[i - ch] if i >= ch else 0
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (cur[i] + pred) & 255
        rows.append(bytes(cur))
        prev = cur
    return np.frombuffer(b"".join(rows), np.uint8).reshape(height, width, ch)


# eval_acc_gain per row and seed: the paired differences B - A are 0.05, 0.06, 0.07
# (interval excludes zero), C - B are 0.05, -0.02, -0.01 (it does not).
GAINS = {"A": [0.10, 0.12, 0.14], "B": [0.15, 0.18, 0.21], "C": [0.20, 0.16, 0.20]}


def ablation_doc(steps: int = 10) -> dict:
    """Three rows of three seeds: metrics, and entropy curves that fall at different rates."""
    rows = []
    for r, (name, gains) in enumerate(GAINS.items()):
        seeds = []
        for s, gain in enumerate(gains):
            xs = list(range(1, steps + 1))
            ys = [0.6 * math.exp(-x / (3 + 4 * r)) + 0.02 * s for x in xs]
            seeds.append(
                {
                    "seed": s,
                    "metrics": {"eval_acc_gain": gain, "trunc_frac": 0.1 + 0.01 * s},
                    "curves": {"entropy/mean": {"steps": xs, "values": ys}},
                }
            )
        rows.append({"name": name, "seeds": seeds})
    return {
        "title": "Cumulative ablation",
        "command": "dapo ablate --seeds 3",
        "metrics": {"eval_acc_gain": {"label": "held-out accuracy gain", "better": "max"}},
        "rows": rows,
    }
