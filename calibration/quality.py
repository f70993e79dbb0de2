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


# --- confidence ---------------------------------------------------------------------------

AGREEING_TILE_PX = 2.0  # a tile whose own best shift is within this (visible pixels) agrees
INFORMATIVE_TILE_RESPONSE = 0.1  # phase-correlation peak height of a tile with shared structure
MIN_INFORMATIVE_TILES = 8  # fewer informative tiles than this cannot make a confident answer
CONFIDENCE_WIDTH = 480  # tiles are checked at most this wide


@dataclass(frozen=True)
class Confidence:
    """How far the data back a registration; ``score`` in [0, 1]; `calibrate scene` refuses below 0.7.

    Held-out tiles: each tile of the visible image is aligned on its own with the warped
    infrared one (phase correlation on edge maps, nothing shared with the global fit). Where
    the registration is right, tiles with shared structure find no shift of their own; where
    it is wrong, their shifts scatter. ``score`` is the share of tiles that agree, out of at
    least ``MIN_INFORMATIVE_TILES`` (so a blank or smoky frame, with few informative tiles,
    scores low). Starts and frames that reached the same answer are reported beside it.
    """

    score: float
    tiles_agreeing: int
    tiles_informative: int
    starts_agreeing: int = 1
    starts: int = 1
    frames_agreeing: int = 1
    frames: int = 1

    def describe(self) -> str:
        text = (
            f"confidence {self.score:.2f}: {self.tiles_agreeing} of {self.tiles_informative} informative tiles agree, "
            f"{self.starts_agreeing} of {self.starts} search starts agree"
        )
        return text + (f", {self.frames_agreeing} of {self.frames} frame pairs agree" if self.frames > 1 else "")


def registration_confidence(ir: np.ndarray, vi: np.ndarray, H: np.ndarray, starts_agreeing: int = 1, starts: int = 1) -> Confidence:
    """Held-out tile agreement of H (infrared -> visible pixels) on one pair; see :class:`Confidence`."""
    factor = min(1.0, CONFIDENCE_WIDTH / image_size(vi)[0])
    if factor < 1.0:
        vi = cv2.resize(vi, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        H = np.diag([factor, factor, 1.0]) @ H
    shifts, responses = _tile_shifts(ir, vi, H)
    informative = responses >= INFORMATIVE_TILE_RESPONSE
    lengths = np.hypot(shifts[:, 0], shifts[:, 1]) / factor if len(shifts) else np.zeros(0)
    agreeing = int(np.count_nonzero(informative & (lengths <= AGREEING_TILE_PX)))
    count = int(np.count_nonzero(informative))
    score = agreeing / max(count, MIN_INFORMATIVE_TILES)
    return Confidence(float(score), agreeing, count, starts_agreeing, starts)


def _tile_shifts(ir: np.ndarray, vi: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile (dx, dy) and phase-correlation response on a grid of half-overlapping tiles."""
    vi_features, ir_features, mask = warped_features(ir, vi, H)
    width, height = image_size(vi)
    tile = _default_tile(width, height)
    window = cv2.createHanningWindow((tile, tile), cv2.CV_64F)
    shifts, responses = [], []
    for y in range(0, height - tile + 1, tile // 2):
        for x in range(0, width - tile + 1, tile // 2):
            if mask[y : y + tile, x : x + tile].mean() < 255 * MIN_TILE_EDGE_FRACTION:
                continue
            a = vi_features[y : y + tile, x : x + tile].astype(np.float64)
            b = ir_features[y : y + tile, x : x + tile].astype(np.float64)
            (dx, dy), response = cv2.phaseCorrelate(a, b, window)
            shifts.append((dx, dy))
            responses.append(response)
    return np.array(shifts, np.float64).reshape(-1, 2), np.array(responses, np.float64)
