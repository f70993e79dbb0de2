"""How well `ldfusion calibrate scene` recovers known warps on many real pairs; prints a table.

For each registered IR/visible pair in ../shared/data/pairs, an infrared frame covering the
central 80 % of the visible one is cut out under a known homography (shift, rotation, scale,
perspective) and the registration is estimated from a rough start (the frames centred).
Two corner errors are printed (RMS over the infrared frame's corners, visible pixels):

* ``rel``: against the known warp composed with what the estimator finds for the unwarped
  pair, i.e. how well the known warp is recovered;
* ``abs``: against the bare known warp; it includes the dataset's own misregistration.

    python scripts/calibration_scene_accuracy.py [--limit 8] [--width 320]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from calibration_helpers import centred_homography, infrared_view  # noqa: E402  (test helpers: the same setup as the tests)

from calibration.imaging import corner_error  # noqa: E402
from calibration.scene import register_scene  # noqa: E402
from ldfusion.imageio import pair_folders, read_infrared, read_visible  # noqa: E402

KINDS = ("shift", "rotation", "scale", "perspective")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pairs")
    parser.add_argument("--limit", type=int, default=6, help="pairs per dataset")
    parser.add_argument("--width", type=int, default=320, help="visible width to work at")
    args = parser.parse_args()
    relative, absolute, seconds = [], [], []
    print(f"{'pair':34s} " + " ".join(f"{k:>17s}" for k in KINDS) + "   (rel / abs px)")
    for dataset in sorted(p for p in args.data.iterdir() if (p / "ir").is_dir()):
        for pair in pair_folders(dataset / "ir", dataset / "vi")[: args.limit]:
            row, rel, abs_ = measure(read_infrared(pair.ir), read_visible(pair.vi), args.width, seconds)
            relative += rel
            absolute += abs_
            print(f"{dataset.name + '/' + pair.name:34s} {row}")
    relative, absolute = np.array(relative), np.array(absolute)
    print(
        f"\n{len(relative)} estimates: relative corner error median {np.median(relative):.2f} px, "
        f"{np.mean(relative < 1.0):.0%} under 1 px; absolute median {np.median(absolute):.2f} px; "
        f"{np.mean(seconds):.2f} s per estimate"
    )
    return 0


def measure(ir_full: np.ndarray, visible_full: np.ndarray, width: int, seconds: list) -> tuple[str, list, list]:
    vi_size = (width, round(visible_full.shape[0] * width / visible_full.shape[1]))
    ir_size = (round(vi_size[0] * 0.8), round(vi_size[1] * 0.8))
    visible = cv2.resize(visible_full, vi_size, interpolation=cv2.INTER_AREA)
    rough = centred_homography("none", ir_size, vi_size)
    base = register_scene(infrared_view(ir_full, rough, ir_size, vi_size), visible, rough).H
    R = base @ np.linalg.inv(rough)
    cells, rel, abs_ = [], [], []
    for kind in KINDS:
        H_known = centred_homography(kind, ir_size, vi_size)
        start = time.perf_counter()
        H = register_scene(infrared_view(ir_full, H_known, ir_size, vi_size), visible, rough).H
        seconds.append(time.perf_counter() - start)
        rel.append(corner_error(H, R @ H_known, ir_size))
        abs_.append(corner_error(H, H_known, ir_size))
        cells.append(f"{rel[-1]:7.2f} / {abs_[-1]:7.2f}")
    return " ".join(cells), rel, abs_


if __name__ == "__main__":
    sys.exit(main())
