#!/usr/bin/env python3
"""Speed-ups on the CPU, interleaved in one process so a loaded machine slows every
configuration alike: each round times one 640x512 frame through every configuration in
turn, and the table gives median milliseconds and the ratio to LD-Lite on PyTorch.

    PYTHONPATH=. python scripts/cpu_speed.py [--rounds 15] [--size 640x512]

Configurations: LD-Lite on PyTorch (the baseline) and on OpenVINO (float32, and bf16 where
the CPU computes it natively: `--precision bf16`); `default` on OpenVINO,
float and as `weights: auto` runs it on the CPU (its shipped int8 export); `fast` on
PyTorch, on OpenVINO and, when its int8 export exists (`ldfusion export --weights fast
--int8 ...`), int8; the same for LD-Lite int8. `ldfusion bench` measures each one alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from ldfusion.errors import LDFusionError
from ldfusion.inference import Fuser, FuserOptions

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LD_LITE = str(SHARED / "weights/ld-lite/final.pt")
CONFIGS = (  # label, weights, backend, int8, precision of OpenVINO's float layers
    ("ld-lite, torch", LD_LITE, "torch", False, "auto"),
    ("ld-lite, openvino", LD_LITE, "openvino", False, "auto"),
    ("ld-lite, openvino bf16", LD_LITE, "openvino", False, "bf16"),
    ("ld-lite, openvino int8", LD_LITE, "openvino", True, "auto"),
    ("default, openvino", "default", "openvino", False, "auto"),
    ("auto: default, openvino int8 (shipped)", None, "auto", None, "auto"),
    ("fast, torch", "fast", "torch", False, "auto"),
    ("fast, openvino", "fast", "openvino", False, "auto"),
    ("fast, openvino int8", "fast", "openvino", True, "auto"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", default="640x512", help="WxH")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    fusers = {}
    for label, weights, backend, int8, precision in CONFIGS:
        try:
            options = FuserOptions(device="cpu", backend=backend, int8=int8, precision=precision)
            fusers[label] = Fuser.from_weights(weights, options=options)
        except LDFusionError as exc:
            print(f"{label}: skipped ({exc})", file=sys.stderr)
    rng = np.random.default_rng(0)
    visible = [(rng.random((height, width, 3)) * 255).astype(np.uint8)]
    ir = [(rng.random((height, width)) * 255).astype(np.uint8)]
    times: dict[str, list[float]] = {label: [] for label in fusers}
    for fuser in fusers.values():
        fuser.fuse_arrays(visible, ir)  # compile / warm up
    for _ in range(args.rounds):
        for label, fuser in fusers.items():
            start = time.perf_counter()
            fuser.fuse_arrays(visible, ir)
            times[label].append(time.perf_counter() - start)
    base = statistics.median(times[CONFIGS[0][0]])
    print(f"{width}x{height}, batch 1, {args.rounds} interleaved rounds (fuse_arrays: colour in, colour out)")
    print("| configuration | median ms | fps | vs LD-Lite on PyTorch |\n|---|---|---|---|")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"| {label} | {median * 1000:.1f} | {1 / median:.1f} | {base / median:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
