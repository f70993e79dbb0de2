#!/usr/bin/env python3
"""How close to LD-Lite a student can come that only blends its inputs with smooth weights.

A cheap CPU student could run its network at low resolution and predict, per pixel, weights
(a, b, c) for ``fused = a * ir + b * vi_y + c``, upsampled and applied at full resolution (the
guided-filter / bilateral-grid family: the full-resolution work is a few multiplications).
This script gives that family's ceiling on the held-out pairs of
``configs/distill_default.yaml``: for each window radius r it fits (a, b, c) to LD-Lite's own
fused Y by least squares in every (2r+1)^2 window (the best any such student could predict),
then

- ``guided``: averages each pixel's coefficients over the windows that cover it, as a guided
  filter does;
- ``grid``: keeps them only every r pixels and upsamples bilinearly, as a network predicting
  them at 1/r resolution would;

and prints the PSNR of the blend against LD-Lite (the agreement `scripts/teacher_agreement.py`
measures; the quality bar for a CPU student is 33 dB mean, no pair below 30).

    PYTHONPATH=. python scripts/local_affine_bound.py [--radii 2 4 8 16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from teacher_agreement import REPO, SHARED, held_out_pairs  # noqa: E402

from ldfusion.imageio import read_pair  # noqa: E402
from ldfusion.inference import Fuser, FuserOptions, to_chw_float, to_y_batch  # noqa: E402


def box(x: np.ndarray, radius: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), normalize=True, borderType=cv2.BORDER_REFLECT)


def local_affine_fit(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray, radius: int, eps: float = 1e-4):
    """Per-window least-squares (a, b, c) of fused ~ a*ir + b*vi + c (float64 maps; eps regularises flat windows)."""
    mean = lambda x: box(x, radius)  # noqa: E731
    m_ir, m_vi, m_f = mean(ir), mean(vi), mean(fused)
    c_ii = mean(ir * ir) - m_ir * m_ir + eps
    c_vv = mean(vi * vi) - m_vi * m_vi + eps
    c_iv = mean(ir * vi) - m_ir * m_vi
    c_if = mean(ir * fused) - m_ir * m_f
    c_vf = mean(vi * fused) - m_vi * m_f
    det = c_ii * c_vv - c_iv * c_iv
    a = (c_if * c_vv - c_vf * c_iv) / det
    b = (c_vf * c_ii - c_if * c_iv) / det
    return a, b, m_f - a * m_ir - b * m_vi


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((x - y) ** 2)))


def bounds(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray, radius: int) -> dict[str, float]:
    coefficients = local_affine_fit(ir, vi, fused, radius)
    guided = [box(x, radius) for x in coefficients]
    height, width = fused.shape
    coarse = [cv2.resize(x, (max(1, width // radius), max(1, height // radius)), interpolation=cv2.INTER_AREA) for x in guided]
    grid = [cv2.resize(x, (width, height), interpolation=cv2.INTER_LINEAR) for x in coarse]
    blend = lambda a, b, c: a * ir + b * vi + c  # noqa: E731
    return {"guided": psnr(blend(*guided), fused), "grid": psnr(blend(*grid), fused)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--radii", type=int, nargs="+", default=[2, 4, 8, 16], help="window radii in pixels (default: 2 4 8 16)")
    parser.add_argument("--teacher", default=str(SHARED / "weights/ld-lite/final.pt"), help="teacher weights")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        print(f"local_affine_bound: error: {SHARED} is not available", file=sys.stderr)
        return 2
    teacher = Fuser.from_weights(args.teacher, options=FuserOptions(device="cpu", backend="torch"))
    results: dict[tuple[str, int], list[float]] = {}
    for dataset, pair in held_out_pairs(REPO / "configs/distill_default.yaml"):
        visible, infrared = read_pair(pair)
        vi_y, ir = to_y_batch(visible), to_chw_float(infrared)[None]
        fused = teacher.fuse_y(vi_y, ir).cpu()[0, 0].double().numpy()
        vi_np, ir_np = vi_y[0, 0].double().numpy(), ir[0, 0].double().numpy()
        for radius in args.radii:
            for kind, value in bounds(ir_np, vi_np, fused, radius).items():
                results.setdefault((kind, radius), []).append(value)
    print(f"PSNR against LD-Lite of the best local blend a*ir + b*vi_y + c, {len(next(iter(results.values())))} held-out pairs")
    print("| coefficients | window radius | mean dB | worst dB |\n|---|---|---|---|")
    for (kind, radius), values in results.items():
        print(f"| {kind} | {radius} | {np.mean(values):.2f} | {np.min(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
