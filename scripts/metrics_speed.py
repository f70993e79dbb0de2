#!/usr/bin/env python
"""Time each fusion metric on one image triple (default 640x480) and print milliseconds.

    python scripts/metrics_speed.py [--size 640x480] [--repeat 5]

Uses real MSRS pairs from ../shared/data when present (fused = pixel average), else
smoothed random images; the speed does not depend on the content.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from ldfusion import metrics

SHARED_PAIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pairs" / "msrs"


def images(width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ir_path = next(iter(sorted((SHARED_PAIR / "ir").glob("*.png"))), None) if SHARED_PAIR.is_dir() else None
    if ir_path is not None:
        ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
        vi = cv2.imread(str(SHARED_PAIR / "vi" / ir_path.name), cv2.IMREAD_GRAYSCALE)
        ir, vi = (cv2.resize(x, (width, height)).astype(np.float64) for x in (ir, vi))
    else:
        rng = np.random.default_rng(0)
        ir, vi = (np.rint(cv2.GaussianBlur(rng.uniform(0, 255, (height, width)), (0, 0), 1.5)) for _ in range(2))
    return np.rint((ir + vi) / 2), ir, vi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions; the median is shown (default 5)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    fused, ir, vi = images(width, height)

    def timed(fn) -> float:
        fn()  # warm-up
        samples = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples) * 1000

    print(f"{width}x{height}, median of {args.repeat}")
    for name, fn in metrics.METRICS_OF_FUSED.items():
        print(f"  {name:5s} {timed(lambda: fn(fused)):8.1f} ms")
    for name, fn in metrics.METRICS_AGAINST_SOURCES.items():
        print(f"  {name:5s} {timed(lambda: fn(fused, ir, vi)):8.1f} ms")
    print(f"  {'all':5s} {timed(lambda: metrics.evaluate_all(fused, ir, vi)):8.1f} ms  (evaluate_all)")


if __name__ == "__main__":
    main()
