#!/usr/bin/env python
"""How far the video path's colour convention moves the fused output from the image path's.

Image path (``ldfusion fuse``, the authors' convention): RGB frames -> full-range BT.601
YCrCb -> fuse Y -> back to RGB. Video path (``ldfusion run``): the decoder's own Y, Cb, Cr
planes, range-converted to full -> fuse Y -> yuv420p. For the first frames of each M3SVD
pair both are run on the same decoded frames and the PSNR (dB, RGB, 8-bit) of the video
path's fused RGB against the image path's is printed per pair and over all frames.

    PYTHONPATH=. python scripts/pipeline_color_paths.py --weights ../shared/data/weights/ld-lite/final.pt --frames 20
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from ldfusion.config import from_dict
from ldfusion.inference import Fuser, FuserOptions, to_uint8
from ldfusion.video import VideoReader
from pipeline.config import PipelineConfig
from pipeline.runner import fused_frames

M3SVD = Path("../shared/data/video/m3svd")
PAIRS = ("0111_1716", "0113_1714", "1230_1202")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def compare(fuser: Fuser, ir: Path, visible: Path, count: int) -> list[float]:
    """PSNR per frame between the two paths, for the first ``count`` pairs."""
    config = from_dict(PipelineConfig, {
        "streams": [{"id": "s", "ir": {"path": str(ir)}, "visible": {"path": str(visible)}}],
        "model": {"batch_size": 1, "smoothing": False},
        "run": {"max_frames": count, "progress": False, "stats_interval_s": 3600},
    })
    video_path = {f.meta.vi_index: (f.meta.ir_index, to_uint8(f.rgb).permute(1, 2, 0).cpu().numpy()) for f in fused_frames(config, fuser)}
    with VideoReader(ir, luma_only=True) as reader:
        ir_frames = [image for _, image in zip(range(count + 2), reader.images())]
    with VideoReader(visible) as reader:
        vi_frames = [image for _, image in zip(range(count), reader.images())]
    scores = []
    for vi_index, (ir_index, fused_video) in sorted(video_path.items()):
        fused_image = fuser.fuse_arrays([vi_frames[vi_index]], [ir_frames[ir_index]])[0]
        scores.append(psnr(fused_video, fused_image))
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="weights file or registry name (default: the bundled default)")
    parser.add_argument("--frames", type=int, default=20, help="frames per pair (default 20)")
    parser.add_argument("--m3svd", type=Path, default=M3SVD)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    fuser = Fuser.from_weights(args.weights, None, FuserOptions(device="cpu"))
    every = []
    for name in PAIRS:
        scores = compare(fuser, args.m3svd / "infrared" / f"{name}.mp4", args.m3svd / "visible" / f"{name}.mp4", args.frames)
        every += scores
        print(f"{name}: {len(scores)} frames, PSNR video vs image path: min {min(scores):.2f} dB, mean {np.mean(scores):.2f} dB")
    print(f"all: {len(every)} frames, min {min(every):.2f} dB, mean {np.mean(every):.2f} dB ({fuser.spec.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
