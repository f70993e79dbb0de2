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
import math
from dataclasses import dataclass

import cv2
import numpy as np

from calibration.fileformat import is_affine
from calibration.imaging import edge_features, image_size, pixel_ratio, to_gray_float, valid_mask, warp_to_destination
from calibration.tiles import infrared_corners, joined, level_images, match_tiles, tile_evidence, warped_edges

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

CONFIDENCE_WIDTH = 640  # tiles are checked at most this wide (the finest refinement level)
CONFIDENCE_RADIUS = 5  # each tile looks for its content within +- this many pixels
MIN_AGREEING_TILES = 12  # fewer agreeing tiles than this cannot make a confident answer
# A held-out corner disagreement of this size halves the score. 0.75 rather than 1.5 px, with
# scene.STABILITY_PX 2.5 rather than 1.5 (eighth session): the two tile halves' agreement is
# the sharper test of precision, the resampled refinement the noisier one. Chosen on the
# benchmark's seed 0 (from the parts a run logs; run again: 148 -> 120 of 205 good results
# refused, every failure still refused) and held out on seed 1 (recomputed: 148 -> 130 of 207,
# no failure written that was not written before) and on the video benchmark (same verdicts;
# answers within 0.6 px of before).
HELD_OUT_PX = 0.75


@dataclass(frozen=True)
class Confidence:
    """How far the data back a registration; ``score`` in [0, 1]; `calibrate scene` refuses below its threshold.

    Held-out tiles (:mod:`calibration.tiles`): each tile of the visible image looks for its
    content in the warped infrared image on its own. Where the registration is right, tiles
    with shared structure find it where H puts it, and fits to two disjoint halves of them
    agree at the frame's corners; where it is wrong, or the shared structure is scarce or
    clustered in one place, they scatter or disagree. ``score`` is the share of informative
    tiles that agree, times min(1, agreeing / MIN_AGREEING_TILES), times
    1 / (1 + (held-out corner disagreement / HELD_OUT_PX)^2); :func:`calibration.scene.scene_confidence`
    multiplies that by 1 / (1 + (stability / STABILITY_PX)^2), where stability is how far the
    answer moves when refined on resampled images, and sets it to 0 where the answer moves more
    than WANDER_PX on images resampled differently again (``wander_px``). Starts and frames that
    reached the same answer are reported beside it.
    """

    score: float
    tiles_agreeing: int
    tiles_informative: int
    held_out_px: float = math.inf  # half the RMS corner distance between fits to two halves of the tiles
    remaining_px: float = math.inf  # how far the fit to all tiles would still move the corners
    stability_px: float | None = None  # how far a refinement on resampled images moves it (scene.scene_confidence)
    wander_px: float | None = None  # the same on images resampled differently again (scene.SECOND_RESAMPLING)
    starts_agreeing: int = 1
    starts: int = 1
    frames_agreeing: int = 1
    frames: int = 1

    def describe(self) -> str:
        frames = f", {self.frames_agreeing} of {self.frames} frame pairs agree" if self.frames > 1 else ""
        if self.tiles_informative == 0:  # the disagreement and the moves are then infinite, and say nothing
            return f"confidence {self.score:.2f}: no informative tiles (the images share too little structure)" + frames
        moved = f"moves {self.stability_px:.2f} px when resampled, " if self.stability_px is not None else ""
        moved += f"{self.wander_px:.2f} px when resampled again, " if self.wander_px is not None else ""
        text = (
            f"confidence {self.score:.2f}: {self.tiles_agreeing} of {self.tiles_informative} informative tiles agree, "
            f"held-out corner disagreement {self.held_out_px:.2f} px, {moved}"
            f"{self.starts_agreeing} of {self.starts} search starts agree"
        )
        return text + frames


def registration_confidence(pairs: list[tuple[np.ndarray, np.ndarray]], H: np.ndarray, starts_agreeing: int = 1, starts: int = 1) -> Confidence:
    """Held-out tile agreement of H (infrared -> visible pixels) on frame pairs of one rig
    (one pair, or several of the same sizes: their tiles count together); see :class:`Confidence`."""
    found = []
    for ir, vi in pairs:
        # The pairs share their sizes: every level has the same S_vi, S_ir and H_level, and the
        # last pair's stand for all of them in the evidence below.
        ratio = pixel_ratio(H, image_size(ir))
        vi_small, ir_small, S_vi, S_ir = level_images(to_gray_float(ir), to_gray_float(vi), ratio, CONFIDENCE_WIDTH)
        H_level = S_vi @ H @ np.linalg.inv(S_ir)
        ir_edges, mask = warped_edges(ir_small, H_level, image_size(vi_small))
        found.append(match_tiles(edge_features(vi_small, 1.0, oriented=True), ir_edges, mask, CONFIDENCE_RADIUS))
    perspective = not is_affine(H)
    level_pixel = 1.0 / S_vi[0, 0]  # visible pixels per pixel of the level the tiles work at (1 up to CONFIDENCE_WIDTH)
    evidence = tile_evidence(joined(found), infrared_corners(H_level, image_size(ir_small)), perspective, level_pixel)
    enough = min(1.0, evidence.tiles_agreeing / MIN_AGREEING_TILES)
    # The tolerance is in the level's pixels: a 4000 px wide visible image, checked at 640, was
    # held to a sixth of a level pixel, and correct answers were refused (confidence 0.84 at
    # 500 px, 0.37 at 1000, 0 at 2000 and above for one RoadScene pair).
    score = evidence.agreeing_share * enough / (1.0 + (evidence.held_out_px / (HELD_OUT_PX * level_pixel)) ** 2)
    return Confidence(
        float(score),
        evidence.tiles_agreeing,
        evidence.tiles_informative,
        held_out_px=evidence.held_out_px,
        remaining_px=evidence.remaining_px,
        starts_agreeing=starts_agreeing,
        starts=starts,
    )
