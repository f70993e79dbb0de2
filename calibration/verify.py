"""See and score a registration: the warped source image laid over the destination image.

Styles of overlay (all RGB uint8 at the destination's size):

* ``edges``: the destination in dim gray, its edges green, the warped source's edges
  magenta; where they coincide they turn white. Doubled edges show misalignment.
* ``checker``: tiles alternating between destination and warped source; edges that break
  at tile borders show misalignment.
* ``blend``: the warped source in false colour over the destination.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from calibration.fileformat import CalibrationError, Registration, is_affine
from calibration.imaging import image_size, stretch_contrast, to_gray_u8, valid_mask, warp_to_destination
from calibration.quality import Confidence, Residual, alignment_score, local_residual
from calibration.scene import SceneOptions, scene_confidence

STYLES = ("edges", "checker", "blend")
CHECKER_TILES = 8  # across the width
GREEN, MAGENTA = np.array([0, 255, 0], np.uint8), np.array([255, 0, 255], np.uint8)


@dataclass(frozen=True)
class Verification:
    score: float  # edge correlation over the shared area, [-1, 1], higher is better
    residual: Residual  # remaining per-tile shift, destination pixels
    overlay: np.ndarray  # (H, W, 3) RGB uint8
    coverage: float  # fraction of the destination that the warped source covers
    confidence: Confidence  # the held-out tile score `calibrate scene` decides by


def check_sizes(registration: Registration, ir: np.ndarray, vi: np.ndarray) -> None:
    """The images must have the sizes the registration was made for."""
    destination = "vi" if registration.source == "ir" else "ir"
    expected = {registration.source: registration.source_size, destination: registration.destination_size}
    for name, image in (("ir", ir), ("vi", vi)):
        if image_size(image) != tuple(expected[name]):
            got, want = "x".join(map(str, image_size(image))), "x".join(map(str, expected[name]))
            raise CalibrationError(f"the {name} image is {got} but the calibration expects {want}")


def verify(source: np.ndarray, destination: np.ndarray, H: np.ndarray, style: str = "edges", model: str | None = None) -> Verification:
    """Score H (source -> destination pixels) on one image pair and render the overlay.

    ``model``: the one H was fitted as (the calibration file's ``model``), so the confidence
    refines it as ``calibrate scene`` did; None guesses it from H (``is_affine``), which a
    homography that came out with near-zero perspective terms would fool.
    """
    if style not in STYLES:
        raise CalibrationError(f"overlay style must be one of {STYLES}; got {style!r}")
    warped = warp_to_destination(stretch_contrast(to_gray_u8(source)), H, image_size(destination))
    mask = valid_mask(image_size(source), H, image_size(destination))
    coverage = float(np.count_nonzero(mask)) / mask.size
    if coverage == 0:
        raise CalibrationError("the warped source image does not overlap the destination image at all")
    overlay = {"edges": edge_overlay, "checker": checker_overlay, "blend": blend_overlay}[style](warped, mask, destination)
    score, residual = alignment_score(source, destination, H), local_residual(source, destination, H)
    model = model or ("affine" if is_affine(H) else "homography")
    confidence = scene_confidence([(source, destination)], H, SceneOptions(model=model))
    return Verification(score, residual, overlay, coverage, confidence)


def edge_overlay(warped: np.ndarray, mask: np.ndarray, destination: np.ndarray) -> np.ndarray:
    base = stretch_contrast(to_gray_u8(destination))
    destination_edges = _edges(base) > 0
    # The border of the warped frame is not an edge of the scene.
    source_edges = (_edges(warped) > 0) & (cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0)
    out = np.repeat((base // 3)[:, :, None], 3, axis=2)
    out[destination_edges] = GREEN
    out[source_edges] = MAGENTA
    out[destination_edges & source_edges] = 255
    return out


def checker_overlay(warped: np.ndarray, mask: np.ndarray, destination: np.ndarray) -> np.ndarray:
    base = stretch_contrast(to_gray_u8(destination))
    height, width = base.shape
    tile = max(8, width // CHECKER_TILES)
    rows, cols = np.indices((height, width)) // tile
    use_source = ((rows + cols) % 2 == 1) & (mask > 0)
    gray = np.where(use_source, warped, base)
    return np.repeat(gray[:, :, None], 3, axis=2)


def blend_overlay(warped: np.ndarray, mask: np.ndarray, destination: np.ndarray) -> np.ndarray:
    base = np.repeat(stretch_contrast(to_gray_u8(destination))[:, :, None], 3, axis=2)
    heat = cv2.cvtColor(cv2.applyColorMap(warped, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    blended = cv2.addWeighted(base, 0.5, heat, 0.5, 0.0)
    return np.where(mask[:, :, None] > 0, blended, base)


def _edges(gray: np.ndarray) -> np.ndarray:
    """Canny edges with thresholds from the image's own median (works for both modalities)."""
    blurred = cv2.GaussianBlur(gray, (0, 0), 1.2)
    median = float(np.median(blurred))
    return cv2.Canny(blurred, max(10.0, 0.66 * median), max(30.0, 1.33 * median))
