"""How well a registration lines the infrared image up with the visible one.

Two measures, both on edge features (what the two modalities share):

* ``alignment_score``: the correlation (ECC, in [-1, 1]) of the visible edges with the
  warped infrared edges over the area they share. Higher is better; it compares candidate
  registrations of one pair, not different pairs.
* ``local_residual``: the image is cut into overlapping tiles and each tile's remaining
  shift is measured by phase correlation; the RMS of the confident shifts, in destination
  pixels, is the residual misalignment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from calibration.imaging import edge_features, image_size, valid_mask, warp_to_destination

log = logging.getLogger(__name__)

# Phase-correlation peaks below this are noise (a flat or modality-specific tile).
MIN_TILE_RESPONSE = 0.08
MIN_TILE_EDGE_FRACTION = 0.9  # a tile must lie this much inside the warped infrared


@dataclass(frozen=True)
class Residual:
    rms_px: float | None  # None when no tile was confident
    tiles_used: int
    tiles_total: int
    shifts: np.ndarray  # (N, 4): tile centre x, y and remaining shift dx, dy, destination pixels


def warped_features(ir: np.ndarray, vi: np.ndarray, H: np.ndarray, sigma: float = 1.0):
    """Edge features of the visible image and of the infrared image warped onto it, plus the mask."""
    destination = image_size(vi)
    vi_features = edge_features(vi, sigma)
    ir_features = warp_to_destination(edge_features(ir, sigma), H, destination)
    # Erode so that the step at the edge of the warped frame never counts.
    mask = valid_mask(image_size(ir), H, destination, erode=3)
    return vi_features, ir_features, mask


def alignment_score(ir: np.ndarray, vi: np.ndarray, H: np.ndarray) -> float:
    """ECC correlation of visible and warped infrared edges over their common area."""
    vi_features, ir_features, mask = warped_features(ir, vi, H)
    if cv2.countNonZero(mask) < 64:
        return float("nan")
    return float(cv2.computeECC(vi_features, ir_features, mask))


def local_residual(ir: np.ndarray, vi: np.ndarray, H: np.ndarray, tile: int | None = None) -> Residual:
    """Remaining shift per tile (phase correlation of edge features) and its RMS."""
    vi_features, ir_features, mask = warped_features(ir, vi, H)
    width, height = image_size(vi)
    tile = tile or _default_tile(width, height)
    window = cv2.createHanningWindow((tile, tile), cv2.CV_64F)
    rows, total = [], 0
    for y in range(0, height - tile + 1, tile // 2):
        for x in range(0, width - tile + 1, tile // 2):
            if mask[y : y + tile, x : x + tile].mean() < 255 * MIN_TILE_EDGE_FRACTION:
                continue
            total += 1
            a = vi_features[y : y + tile, x : x + tile].astype(np.float64)
            b = ir_features[y : y + tile, x : x + tile].astype(np.float64)
            (dx, dy), response = cv2.phaseCorrelate(a, b, window)
            if response >= MIN_TILE_RESPONSE and max(abs(dx), abs(dy)) < tile / 4:
                rows.append((x + (tile - 1) / 2, y + (tile - 1) / 2, dx, dy))
    shifts = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return Residual(_robust_rms(shifts[:, 2:]), len(shifts), total, shifts)


def _default_tile(width: int, height: int) -> int:
    """About a quarter of the short side, even, at least 32 pixels."""
    return max(32, (min(width, height) // 4) // 2 * 2)


def _robust_rms(shifts: np.ndarray) -> float | None:
    """RMS shift length after dropping tiles far from the median (mismatched content)."""
    if len(shifts) == 0:
        return None
    lengths = np.hypot(shifts[:, 0] - np.median(shifts[:, 0]), shifts[:, 1] - np.median(shifts[:, 1]))
    spread = 1.4826 * np.median(lengths) + 1e-6
    kept = shifts[lengths <= max(3.0 * spread, 1.0)]
    return float(np.sqrt(np.mean(np.sum(kept**2, axis=1))))
