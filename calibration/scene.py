"""Target-free registration from one infrared/visible scene pair.

Infrared and visible intensities are unrelated (a warm road is bright in one, dark in the
other), but edges fall in the same places. So the images are turned into oriented edge
features (:func:`calibration.imaging.edge_features`: gradient magnitude over its local
average, with the edge direction as a doubled angle so polarity does not matter) and
aligned by ECC (``cv2.findTransformECC``), which is blind to gain and offset, over a
coarse-to-fine pyramid. The degrees of freedom grow with the resolution: translation at the
coarsest level, affine in between, the full model only at the finest. Fitting all eight
homography parameters on a coarse cross-modal pair lets ECC "zoom" into one patch that
happens to correlate well; the staged schedule avoids that.

The start is the identity (the frames stretched over each other when their sizes differ), a
rough registration file, or optionally a homography from SIFT matches on the edge maps.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from calibration.fileformat import CalibrationError
from calibration.imaging import (
    Size,
    apply_homography,
    edge_features,
    image_corners,
    image_size,
    normalise_homography,
    scaling,
    size_ratio_homography,
)
from calibration.quality import Residual, local_residual

log = logging.getLogger(__name__)

MOTIONS = {"homography": cv2.MOTION_HOMOGRAPHY, "affine": cv2.MOTION_AFFINE}
_MOTION_NAMES = {cv2.MOTION_TRANSLATION: "translation", cv2.MOTION_AFFINE: "affine", cv2.MOTION_HOMOGRAPHY: "homography"}
MAGNITUDE_CHANNEL = 2  # of the oriented edge features
WEAK_CORRELATION = 0.2  # below this the two edge maps barely agree: warn


@dataclass(frozen=True)
class SceneOptions:
    model: str = "homography"  # homography | affine
    levels: int = 0  # pyramid levels; 0 picks them so the coarsest is ~coarsest_width wide
    coarsest_width: int = 40
    max_width: int = 640  # work at most this wide (speed); H is scaled back to full size
    iterations: int = 200  # ECC iterations per step
    epsilon: float = 1e-6  # ECC stops when the correlation gains less than this
    sigma: float = 1.0  # Gaussian blur before the gradient, working pixels
    shift_search: bool = True  # phase correlation at the coarsest level catches large shifts

    def __post_init__(self) -> None:
        if self.model not in MOTIONS:
            raise CalibrationError(f"model must be one of {tuple(MOTIONS)}; got {self.model!r}")
        if self.levels < 0 or self.levels > 8:
            raise CalibrationError(f"levels must be 0 (auto) to 8; got {self.levels}")
        if self.coarsest_width < 16 or self.max_width < 64:
            raise CalibrationError("coarsest_width must be >= 16 and max_width >= 64")
        if self.iterations < 1 or self.epsilon <= 0 or self.sigma < 0:
            raise CalibrationError("iterations >= 1, epsilon > 0 and sigma >= 0 are required")


@dataclass(frozen=True)
class SceneResult:
    H: np.ndarray  # (3, 3) infrared pixels -> visible pixels
    correlation: float  # final ECC correlation of the edge features, in [-1, 1]
    residual: Residual  # remaining per-tile misalignment, visible pixels
    method: str  # "ecc" or "features+ecc"


def register_scene(
    ir: np.ndarray,
    vi: np.ndarray,
    init: np.ndarray | None = None,
    options: SceneOptions = SceneOptions(),
    use_features: bool = False,
) -> SceneResult:
    """Estimate the infrared -> visible map from one scene pair.

    ``ir`` and ``vi`` are (H, W) or (H, W, 3) images of any size. ``init`` is a rough
    infrared -> visible homography (default: the frames stretched over each other).
    ``use_features`` starts instead from SIFT matches on the edge maps (needs enough
    shared structure; raises ``CalibrationError`` when the matches do not agree).
    """
    if use_features and init is not None:
        raise ValueError("give either init or use_features, not both")
    ir_size, vi_size = image_size(ir), image_size(vi)
    start = size_ratio_homography(ir_size, vi_size) if init is None else normalise_homography(init)
    method = "ecc"
    if use_features:
        start, inliers = match_edge_features(ir, vi)
        log.info("edge-feature matching: %d consistent matches", inliers)
        method = "features+ecc"
    H, correlation = refine_ecc(ir, vi, start, options)
    if correlation < WEAK_CORRELATION:
        log.warning(
            "edge correlation is only %.2f: check the result with `ldfusion calibrate verify`; "
            "if it is off, start closer (--init from `points`, or --features)",
            correlation,
        )
    residual = local_residual(ir, vi, H)
    return SceneResult(H, correlation, residual, method)


def refine_ecc(
    ir: np.ndarray, vi: np.ndarray, init: np.ndarray, options: SceneOptions = SceneOptions()
) -> tuple[np.ndarray, float]:
    """ECC on edge features, coarse to fine, from ``init``; returns (H, correlation)."""
    init = normalise_homography(init)
    if options.model == "affine":
        init[2] = (0.0, 0.0, 1.0)  # an affine fit cannot start from (or keep) a perspective part
    ir_scale, vi_scale = _working_scales(image_size(ir), image_size(vi), init, options.max_width)
    ir_work, S_ir = _resize(ir, ir_scale)
    vi_work, S_vi = _resize(vi, vi_scale)
    ir_features = edge_features(ir_work, options.sigma, oriented=True)  # (h, w, 3)
    vi_features = edge_features(vi_work, options.sigma, oriented=True)
    # ECC finds W with vi(x) ~ ir(W x): the visible -> infrared map, the inverse of ours.
    W = np.linalg.inv(S_vi @ normalise_homography(init) @ np.linalg.inv(S_ir))
    levels = options.levels or _auto_levels(min(ir_features.shape[1], vi_features.shape[1]), options.coarsest_width)
    correlation, fitted = float("nan"), 0
    for level in reversed(range(levels)):
        W, correlation, fitted = _refine_level(ir_features, vi_features, W, level, levels, options)
    if fitted == 0:
        log.warning("ECC did not converge at full resolution; the result comes from a coarser level")
    H = np.linalg.inv(S_vi) @ normalise_homography(np.linalg.inv(W)) @ S_ir
    if options.model == "affine":
        H[2] = (0.0, 0.0, 1.0)  # exact zeros, not round-off
    return normalise_homography(H), correlation


def match_edge_features(ir: np.ndarray, vi: np.ndarray, ratio: float = 0.85, min_inliers: int = 10) -> tuple[np.ndarray, int]:
    """A rough infrared -> visible homography from SIFT matches on the two edge maps (MAGSAC)."""
    sift = cv2.SIFT_create(nfeatures=3000)
    keypoints, descriptors = [], []
    for image in (ir, vi):
        features = edge_features(image)
        edges_u8 = cv2.normalize(features, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)
        found, described = sift.detectAndCompute(edges_u8, None)
        keypoints.append(found)
        descriptors.append(described)
    if descriptors[0] is None or descriptors[1] is None or len(keypoints[0]) < 2 or len(keypoints[1]) < 2:
        raise CalibrationError("edge-feature matching found no keypoints; start from --init instead")
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(descriptors[0], descriptors[1], k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance]
    if len(good) < min_inliers:
        raise CalibrationError(f"edge-feature matching found only {len(good)} matches (need {min_inliers}); start from --init")
    src = np.float32([keypoints[0][m.queryIdx].pt for m in good])
    dst = np.float32([keypoints[1][m.trainIdx].pt for m in good])
    H, inliers = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, 3.0)
    count = 0 if inliers is None else int(inliers.sum())
    if H is None or count < min_inliers or not _plausible(H, image_size(ir), image_size(vi)):
        raise CalibrationError(f"edge-feature matches do not agree on one homography ({count} inliers); start from --init")
    return normalise_homography(H), count


def _refine_level(ir_features, vi_features, W: np.ndarray, level: int, levels: int, options: SceneOptions):
    """One pyramid level: map W into the level's pixels, run the scheduled ECC steps, map back.

    Returns (W, correlation, number of ECC steps that converged).
    """
    vi_level, S_vi = _resize(vi_features, 0.5**level)
    ir_level, S_ir = _resize(ir_features, 0.5**level)
    W_level = normalise_homography(S_ir @ W @ np.linalg.inv(S_vi))
    correlation = _correlation(vi_level, ir_level, W_level)
    if level == levels - 1 and options.shift_search:
        W_level, correlation = _search_shift(vi_level, ir_level, W_level, correlation)
    fitted = 0
    for motion in _schedule(level, levels, MOTIONS[options.model]):
        if motion != cv2.MOTION_HOMOGRAPHY and not np.allclose(W_level[2, :2], 0.0):
            continue  # translation/affine steps would drop the perspective part of the start
        W_level, correlation, converged = _ecc_step(vi_level, ir_level, W_level, motion, options, level, correlation)
        fitted += converged
    if not math.isfinite(correlation):
        raise CalibrationError("the infrared and visible images do not overlap under the starting registration")
    return np.linalg.inv(S_ir) @ W_level @ S_vi, correlation, fitted


def _schedule(level: int, levels: int, final: int) -> list[int]:
    """ECC motion models to fit at one level: few parameters coarse, all of them fine."""
    if levels == 1:
        return [cv2.MOTION_TRANSLATION, cv2.MOTION_AFFINE, final]
    if level == levels - 1:
        return [cv2.MOTION_TRANSLATION]
    if level == 0:
        return [cv2.MOTION_AFFINE, final] if final != cv2.MOTION_AFFINE else [cv2.MOTION_AFFINE]
    return [cv2.MOTION_TRANSLATION, cv2.MOTION_AFFINE]


def _ecc_step(template, source, W, motion, options: SceneOptions, level: int, correlation: float):
    """One ECC fit -> (W, correlation, converged); a failed or collapsing step keeps the previous W."""
    start = W if motion == cv2.MOTION_HOMOGRAPHY else W[:2]
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, options.iterations, options.epsilon)
    blur = 5 if level > 0 else 3
    try:
        new_correlation, found = cv2.findTransformECC(template, source, start.astype(np.float32), motion, criteria, None, blur)
    except cv2.error as exc:
        log.debug("ECC %s at level %d did not converge: %s", _MOTION_NAMES[motion], level, str(exc).strip()[-120:])
        return W, correlation, False
    W_new = normalise_homography(found.astype(np.float64))
    H_new = np.linalg.inv(W_new)
    if not _plausible(H_new, image_size(source), image_size(template)):
        log.debug("ECC %s at level %d collapsed the overlap; step ignored", _MOTION_NAMES[motion], level)
        return W, correlation, False
    log.debug("level %d %s: correlation %.3f", level, _MOTION_NAMES[motion], new_correlation)
    return W_new, float(new_correlation), True


def _search_shift(template, source, W, correlation: float):
    """Phase-correlate the pre-warped infrared edges with the visible ones for a large shift."""
    magnitude = MAGNITUDE_CHANNEL if source.ndim == 3 else slice(None)
    warped = cv2.warpPerspective(source[..., magnitude], W, image_size(template), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    window = cv2.createHanningWindow(image_size(template), cv2.CV_64F)
    (dx, dy), response = cv2.phaseCorrelate(template[..., magnitude].astype(np.float64), warped.astype(np.float64), window)
    # warped(x) ~ template(x - d), so template(x) ~ source(W (x + d)).
    W_shifted = W @ np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
    shifted = _correlation(template, source, W_shifted)
    if math.isfinite(shifted) and (not math.isfinite(correlation) or shifted > correlation):
        log.debug("coarse shift search moved the start by (%.1f, %.1f) px (response %.2f)", dx, dy, response)
        return W_shifted, shifted
    return W, correlation


def _correlation(template: np.ndarray, source: np.ndarray, W: np.ndarray) -> float:
    """ECC correlation of template and the source pulled back through W, over their overlap."""
    warped = cv2.warpPerspective(source, W, image_size(template), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    ones = np.full(source.shape[:2], 255, np.uint8)
    mask = cv2.warpPerspective(ones, W, image_size(template), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    if cv2.countNonZero(mask) < 64:
        return float("nan")
    return float(cv2.computeECC(template, warped, mask))


def _plausible(H: np.ndarray, source_size: Size, destination_size: Size) -> bool:
    """The source frame maps to a convex quad that overlaps the destination by a fair amount."""
    quad = apply_homography(H, image_corners(source_size)).astype(np.float32)
    if not np.all(np.isfinite(quad)) or not cv2.isContourConvex(quad.reshape(-1, 1, 2)):
        return False
    destination = image_corners(destination_size).astype(np.float32)
    overlap, _ = cv2.intersectConvexConvex(quad, destination)
    smaller = min(cv2.contourArea(quad), cv2.contourArea(destination))
    return smaller > 0 and overlap >= 0.1 * smaller


def _working_scales(ir_size: Size, vi_size: Size, init: np.ndarray, max_width: int) -> tuple[float, float]:
    """Scales that keep both images under max_width and bring their pixel sizes together."""
    ir_scale = min(1.0, max_width / ir_size[0])
    vi_scale = min(1.0, max_width / vi_size[0])
    # Visible pixels per infrared pixel under the start: sqrt of the local area ratio.
    centre = np.array([[(ir_size[0] - 1) / 2, (ir_size[1] - 1) / 2]])
    jacobian = _local_jacobian(init, centre[0])
    vi_per_ir = math.sqrt(abs(np.linalg.det(jacobian))) if np.all(np.isfinite(jacobian)) else 1.0
    if vi_per_ir * vi_scale / ir_scale > 1.5:
        vi_scale = ir_scale / vi_per_ir  # much finer visible pixels only add edges ir cannot show
    return ir_scale, vi_scale


def _local_jacobian(H: np.ndarray, point: np.ndarray, step: float = 1.0) -> np.ndarray:
    x, y = point
    samples = apply_homography(H, np.array([[x, y], [x + step, y], [x, y + step]]))
    return np.stack([samples[1] - samples[0], samples[2] - samples[0]], axis=1) / step


def _resize(image: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Image resized by ``factor`` (area averaging) and the 3x3 map from old to new pixels."""
    if abs(factor - 1.0) < 1e-9:
        return image, np.eye(3)
    width, height = image_size(image)
    new_size = (max(8, round(width * factor)), max(8, round(height * factor)))
    resized = cv2.resize(image, new_size, interpolation=cv2.INTER_AREA)
    return resized, scaling(new_size[0] / width, new_size[1] / height)


def _auto_levels(width: int, coarsest_width: int) -> int:
    return int(np.clip(1 + math.floor(math.log2(max(width, 1) / coarsest_width)), 1, 6))

