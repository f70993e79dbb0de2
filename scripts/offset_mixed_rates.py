"""Offsets with an infrared camera at a lower rate than the visible one.

Each M3SVD infrared clip is taken at every ``step``-th frame (15 and 10 fps against a 30 fps
visible clip), starting ``start`` frames in, in memory (no re-encoding), and
``calibration.timing.estimate_offset`` is asked for the delay, whose truth is ``start`` visible
frames. Prints each case's error in visible frames and its confidence, then a summary.

    PYTHONPATH=. python scripts/offset_mixed_rates.py [--m3svd ../shared/data/video/m3svd]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from calibration import timing
from ldfusion.video import VideoReader

STEPS = (2, 3)
STARTS = (0, 1, 2, 15)


def blurred_gray_frames(path: Path) -> list[tuple[float, np.ndarray, bool]]:
    """(time, gray frame as the offset estimator sees it, keyframe) for every frame."""
    with VideoReader(path, luma_only=True) as reader:
        return [(t, cv2.GaussianBlur(gray, (0, 0), 1.0), key) for t, gray, key in timing._gray_frames(reader, timing.ANALYSIS_WIDTH, None)]


def motion_signal(frames: list[tuple[float, np.ndarray, bool]], fps: float) -> timing.MotionSignal:
    """The estimator's motion signal of frames already decoded."""
    times = np.array([t for t, _, _ in frames])
    grays = [gray for _, gray, _ in frames]
    energy = np.array([timing.region_energy(np.abs(b - a)) for a, b in zip(grays[:-1], grays[1:])])
    keys = np.array([key for _, _, key in frames][1:], bool)
    times, energy = timing._changes(times, energy, keys, Path("subsampled"))
    return timing.MotionSignal(times, energy, fps, grays[0].shape[::-1])


def subsampled(frames: list, step: int, start: int, fps: float) -> list:
    """Every ``step``-th frame from ``start``, on a clock of its own that starts at 0."""
    return [(j * step / fps, gray, key) for j, (_, gray, key) in enumerate(frames[start::step])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m3svd", type=Path, default=Path("../shared/data/video/m3svd"))
    args = parser.parse_args()
    errors = []
    for clip in sorted(p.stem for p in (args.m3svd / "infrared").glob("*.mp4")):
        ir, vi = blurred_gray_frames(args.m3svd / "infrared" / f"{clip}.mp4"), blurred_gray_frames(args.m3svd / "visible" / f"{clip}.mp4")
        fps = 1.0 / float(np.median(np.diff([t for t, _, _ in vi])))
        visible = motion_signal(vi, fps)
        for step in STEPS:
            for start in STARTS:
                result = timing.estimate_offset(motion_signal(subsampled(ir, step, start, fps), fps / step), visible)
                error = (result.offset_s - start / fps) * fps
                errors.append(error)
                print(f"{clip} {fps:.0f}/{step} fps, start {start:2d}: error {error:+.2f} visible frames, confidence {result.confidence:.2f}", flush=True)
    size = np.abs(errors)
    print(f"{len(size)} cases: mean |error| {size.mean():.2f}, worst {size.max():.2f}; within 1 frame: {(size <= 1).sum()}")


if __name__ == "__main__":
    main()
