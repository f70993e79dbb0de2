"""Target-free registration from infrared/visible scene pairs: a global search, then refinement.

Infrared and visible intensities are unrelated (a warm road is bright in one, dark in the
other), but edges fall in the same places. Both images become edge maps
(:func:`calibration.imaging.edge_features`: gradient magnitude over its local average), and:

1. **Global search** over the declared range (:class:`SearchRange`): on small edge maps
   (``search_width`` pixels wide), every (scale, rotation) on a grid is tried; for each, the
   shift comes from phase correlation restricted to the allowed shifts, and the candidate is
   scored by the correlation of the two edge maps over their overlap. A local method alone
   (ECC from the identity) finds the nearest optimum, which on real rigs (a few degrees, a
   few percent of scale, 10 px) is often the wrong one.
2. **Refinement** of the best few candidates (independent starts) by ECC on the edge maps,
   coarse to fine: affine at the coarse levels, the full model at the finest (up to 640 px wide).
3. **Confidence** (:func:`calibration.quality.registration_confidence`): held-out tiles,
   each aligned on its own, must agree with the global answer, and the independent starts
   that reach the same optimum must agree with each other. The caller refuses a result whose
   confidence is below ``MIN_CONFIDENCE``.

Several frame pairs of one rig (:func:`register_frames`) are registered one by one and the
answer most frames agree on wins, so one blank or smoky frame cannot decide.

Convention: H maps infrared pixels (x, y, 1) to visible pixels, OpenCV pixel centres. The
search range is relative to the start (the frames stretched over each other, or ``init``),
about the visible frame's centre.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

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
from calibration.quality import Confidence, Residual, local_residual, registration_confidence

log = logging.getLogger(__name__)

MOTIONS = {"homography": cv2.MOTION_HOMOGRAPHY, "affine": cv2.MOTION_AFFINE}
AFFINE_LEVELS = 2  # the coarsest levels fit affine maps only; perspective is left to the finer ones
MIN_CONFIDENCE = 0.7  # below this a result is refused (see quality.registration_confidence); set on the benchmark
AGREEMENT_PX = 2.0  # two estimates within this corner distance (visible pixels) agree


@dataclass(frozen=True)
class SearchRange:
    """How far the rig may be from the start: the global search covers all of it."""

    max_scale: float = 1.25  # scales from 1/max_scale to max_scale
    max_rotation_deg: float = 10.0  # rotations within +- this
    max_shift: float = 0.15  # shifts within +- this fraction of the visible width (and height)

    def __post_init__(self) -> None:
        if not 1.0 <= self.max_scale <= 2.0:
            raise CalibrationError(f"max scale must be within 1 to 2; got {self.max_scale}")
        if not 0.0 <= self.max_rotation_deg <= 45.0:
            raise CalibrationError(f"max rotation must be within 0 to 45 degrees; got {self.max_rotation_deg}")
        if not 0.0 <= self.max_shift <= 0.45:
            raise CalibrationError(f"max shift must be within 0 to 0.45 of the width; got {self.max_shift}")

    def scales(self, step: float = 0.045) -> np.ndarray:
        """Scale grid, even in log scale so that neighbours differ by about ``step`` (4.5 %)."""
        half = math.log(self.max_scale)
        count = max(1, 2 * math.ceil(half / step) + 1)
        return np.exp(np.linspace(-half, half, count))

    def rotations(self, step_deg: float = 2.0) -> np.ndarray:
        count = max(1, 2 * math.ceil(self.max_rotation_deg / step_deg) + 1)
        return np.linspace(-self.max_rotation_deg, self.max_rotation_deg, count)


@dataclass(frozen=True)
class SceneOptions:
    model: str = "homography"  # homography | affine
    search: SearchRange = field(default_factory=SearchRange)
    search_width: int = 160  # the global search works on edge maps this wide
    max_width: int = 640  # refinement works at most this wide; H is scaled back to full size
    starts: int = 2  # refine this many distinct global candidates
    iterations: int = 200  # ECC iterations per level
    epsilon: float = 1e-6  # ECC stops when the correlation gains less than this

    def __post_init__(self) -> None:
        if self.model not in MOTIONS:
            raise CalibrationError(f"model must be one of {tuple(MOTIONS)}; got {self.model!r}")
        if self.search_width < 64 or self.max_width < self.search_width:
            raise CalibrationError("search_width must be >= 64 and max_width >= search_width")
        if self.starts < 1 or self.iterations < 1 or self.epsilon <= 0:
            raise CalibrationError("starts >= 1, iterations >= 1 and epsilon > 0 are required")


@dataclass(frozen=True)
class SceneResult:
    H: np.ndarray  # (3, 3) infrared pixels -> visible pixels
    correlation: float  # final ECC correlation of the edge maps, in [-1, 1]
    residual: Residual  # remaining per-tile misalignment, visible pixels
    confidence: Confidence  # how far the data back the answer; see quality.registration_confidence
    method: str = "ecc"

    @property
    def confident(self) -> bool:
        return self.confidence.score >= MIN_CONFIDENCE


def register_scene(
    ir: np.ndarray, vi: np.ndarray, init: np.ndarray | None = None, options: SceneOptions = SceneOptions()
) -> SceneResult:
    """Estimate the infrared -> visible map from one scene pair.

    ``ir`` and ``vi`` are (H, W) or (H, W, 3) images of any size. ``init`` is a rough
    infrared -> visible homography (default: the frames stretched over each other); the
    global search covers ``options.search`` around it.
    """
    ir_size, vi_size = image_size(ir), image_size(vi)
    start = size_ratio_homography(ir_size, vi_size) if init is None else normalise_homography(init)
    pyramid = EdgePyramid.build(ir, vi, start, options)
    candidates = global_search(pyramid, start, options)
    refined = []
    for candidate in candidates:
        H, correlation = refine(pyramid, candidate, options)
        refined.append((correlation, H))
    refined.sort(key=lambda item: -item[0] if math.isfinite(item[0]) else math.inf)
    correlation, H = refined[0]
    if not math.isfinite(correlation):
        raise CalibrationError("the infrared and visible images do not overlap under any registration in the search range")
    agreeing = sum(corner_distance(H, other, ir_size) < AGREEMENT_PX for _, other in refined)
    confidence = registration_confidence(ir, vi, H, starts_agreeing=agreeing, starts=len(refined))
    log.debug("scene: correlation %.3f, %d of %d starts agree, confidence %.2f", correlation, agreeing, len(refined), confidence.score)
    return SceneResult(H, correlation, local_residual(ir, vi, H), confidence)


def register_frames(
    pairs: list[tuple[np.ndarray, np.ndarray]], init: np.ndarray | None = None, options: SceneOptions = SceneOptions()
) -> SceneResult:
    """Register several frame pairs of one rig; the answer most confident frames agree on wins.

    Each pair is registered on its own. Every result votes for the others it agrees with
    (weighted by confidence); the winner's confidence is scaled by the share of the total
    confidence that agrees with it, so frames that disagree lower it.
    """
    if not pairs:
        raise CalibrationError("no frame pairs to register")
    results = []
    for index, (ir, vi) in enumerate(pairs):
        try:
            results.append(register_scene(ir, vi, init, options))
        except CalibrationError as exc:
            log.info("frame pair %d: %s", index, exc)
    if not results:
        raise CalibrationError("no frame pair could be registered")
    if len(results) == 1:
        return results[0]
    ir_size = image_size(pairs[0][0])
    weights = np.array([max(r.confidence.score, 1e-3) for r in results])
    agree = np.array([[corner_distance(a.H, b.H, ir_size) < AGREEMENT_PX for b in results] for a in results])
    support = agree @ weights  # (N,) confidence that agrees with each result
    best = int(np.argmax(support + 1e-6 * weights))
    share = float(support[best] / weights.sum())
    winner = results[best]
    score = winner.confidence.score * share
    log.info("%d of %d frame pairs agree with the chosen registration", int(agree[best].sum()), len(results))
    confidence = dataclasses.replace(winner.confidence, score=score, frames_agreeing=int(agree[best].sum()), frames=len(pairs))
    return SceneResult(winner.H, winner.correlation, winner.residual, confidence, winner.method)


# --- the edge pyramid ---------------------------------------------------------------------


@dataclass(frozen=True)
class EdgeLevel:
    vi: np.ndarray  # (h, w) float32 visible edge map at this level
    ir: np.ndarray  # (h', w') float32 infrared edge map, pixel size matched to the visible one
    S_vi: np.ndarray  # (3, 3) full-resolution visible pixels -> this level's
    S_ir: np.ndarray  # (3, 3) full-resolution infrared pixels -> this level's
    vi_oriented: np.ndarray | None = None  # (h, w, 3) oriented edges, search level only
    ir_oriented: np.ndarray | None = None

    def to_level(self, H: np.ndarray) -> np.ndarray:
        return normalise_homography(self.S_vi @ H @ np.linalg.inv(self.S_ir))

    def from_level(self, H_level: np.ndarray) -> np.ndarray:
        return normalise_homography(np.linalg.inv(self.S_vi) @ H_level @ self.S_ir)


@dataclass(frozen=True)
class EdgePyramid:
    levels: list[EdgeLevel]  # coarsest (the search level) first
    vi_size: Size
    ir_size: Size

    @staticmethod
    def build(ir: np.ndarray, vi: np.ndarray, start: np.ndarray, options: SceneOptions) -> EdgePyramid:
        """Edge maps at search_width, then doubling up to max_width (or the visible width)."""
        ir_size, vi_size = image_size(ir), image_size(vi)
        top = min(options.max_width, vi_size[0])
        widths = [min(options.search_width, top)]
        while widths[-1] < top:
            widths.append(min(widths[-1] * 2, top))
        if len(widths) == 1:
            widths.append(top)  # a small image: the search level (blurred more), then a sharp one
        vi_per_ir = _pixel_ratio(start, ir_size)
        levels = []
        for width in widths:
            vi_factor = width / vi_size[0]
            ir_factor = min(1.0, vi_factor * vi_per_ir)  # infrared pixels as big as the visible ones
            vi_small, S_vi = _resize(vi, vi_factor)
            ir_small, S_ir = _resize(ir, ir_factor)
            search_level = not levels
            sigma = 1.5 if search_level else 1.0
            oriented = (edge_features(vi_small, sigma, oriented=True), edge_features(ir_small, sigma, oriented=True)) if search_level else (None, None)
            levels.append(
                EdgeLevel(edge_features(vi_small, sigma), edge_features(ir_small, sigma), S_vi, S_ir, *oriented)
            )
        return EdgePyramid(levels, vi_size, ir_size)


# --- global search ------------------------------------------------------------------------


def global_search(pyramid: EdgePyramid, start: np.ndarray, options: SceneOptions) -> list[np.ndarray]:
    """The best ``options.starts`` distinct similarity maps (full resolution) over the range."""
    level = pyramid.levels[0]
    vi_size = image_size(level.vi)
    centre = _centring(pyramid.vi_size)
    max_shift = options.search.max_shift * pyramid.vi_size[0] * level.S_vi[0, 0] + 2.0  # level pixels
    window = cv2.createHanningWindow(vi_size, cv2.CV_32F)
    vi_spectrum = _spectrum(level.vi, window)
    scored = []
    for scale in options.search.scales():
        for angle in options.search.rotations():
            H = np.linalg.inv(centre) @ _similarity(scale, angle) @ centre @ start
            H_level = level.to_level(H)
            warped, mask = _warp(level.ir, H_level, vi_size)
            (dx, dy), _ = _phase_shift(vi_spectrum, _spectrum(warped, window), max_shift)
            H_level = _translation(dx, dy) @ H_level
            # Oriented edges (edge direction as a doubled angle) tell candidates apart better
            # than edge strength alone: clutter matches strength, rarely direction too.
            score = _overlap_correlation(level.vi_oriented, level.ir_oriented, H_level)
            if math.isfinite(score):
                scored.append((score, level.from_level(H_level), scale, angle))
    if not scored:
        raise CalibrationError("the infrared and visible images do not overlap under any registration in the search range")
    scored.sort(key=lambda item: -item[0])
    chosen: list[tuple] = []
    for item in scored:  # distinct starts: not neighbours on the grid of the ones kept
        if all(corner_distance(item[1], kept[1], pyramid.ir_size) > 0.05 * pyramid.vi_size[0] for kept in chosen):
            chosen.append(item)
        if len(chosen) == options.starts:
            break
    log.debug("global search: best %s", ", ".join(f"{s:.3f} (x{sc:.3f}, {a:+.1f} deg)" for s, _, sc, a in chosen))
    return [H for _, H, _, _ in chosen]


def _spectrum(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    centred = (image - image.mean()) * window
    return cv2.dft(centred.astype(np.float32), flags=cv2.DFT_COMPLEX_OUTPUT)


def _phase_shift(reference: np.ndarray, moving: np.ndarray, max_shift: float) -> tuple[tuple[float, float], float]:
    """The translation (dx, dy) that moves ``moving`` onto ``reference``, at most max_shift each way, and the peak height.

    Phase correlation: the inverse of the whitened cross-power spectrum peaks at the
    translation sought; only translations within the range are considered.
    """
    cross = cv2.mulSpectrums(reference, moving, 0, conjB=True)
    magnitude = cv2.magnitude(cross[..., 0], cross[..., 1]) + 1e-9
    cross /= magnitude[..., None]
    surface = cv2.idft(cross, flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE)  # (h, w), lags modulo the size
    surface = np.fft.fftshift(surface)
    height, width = surface.shape
    ys, xs = np.mgrid[0:height, 0:width]
    lag_x, lag_y = xs - width // 2, ys - height // 2
    surface = np.where((np.abs(lag_x) <= max_shift) & (np.abs(lag_y) <= max_shift), surface, -np.inf)
    peak_y, peak_x = np.unravel_index(int(np.argmax(surface)), surface.shape)
    sub_x = _parabola(surface[peak_y, max(peak_x - 1, 0) : peak_x + 2]) if 0 < peak_x < width - 1 else 0.0
    sub_y = _parabola(surface[max(peak_y - 1, 0) : peak_y + 2, peak_x]) if 0 < peak_y < height - 1 else 0.0
    return (lag_x[peak_y, peak_x] + sub_x, lag_y[peak_y, peak_x] + sub_y), float(surface[peak_y, peak_x])


def _parabola(values: np.ndarray) -> float:
    if len(values) != 3 or not np.all(np.isfinite(values)):
        return 0.0
    left, centre, right = values
    curvature = left - 2 * centre + right
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0


# --- refinement ---------------------------------------------------------------------------


def refine(pyramid: EdgePyramid, H: np.ndarray, options: SceneOptions) -> tuple[np.ndarray, float]:
    """ECC on the edge maps from ``H``, coarse to fine; returns (H, correlation at the finest level)."""
    final = MOTIONS[options.model]
    correlation = float("nan")
    for index, level in enumerate(pyramid.levels):
        coarse = index < AFFINE_LEVELS and index < len(pyramid.levels) - 1
        motion = cv2.MOTION_AFFINE if coarse else final  # the finest level always fits the full model
        H, correlation = _ecc(level, H, motion, options)
    if options.model == "affine":
        H = normalise_homography(H)
        H[2] = (0.0, 0.0, 1.0)
    return H, correlation


def _ecc(level: EdgeLevel, H: np.ndarray, motion: int, options: SceneOptions) -> tuple[np.ndarray, float]:
    """One ECC fit at one level; a failed or collapsing fit keeps H. Returns (H, correlation)."""
    H_level = level.to_level(H)
    if motion == cv2.MOTION_AFFINE:
        H_level[2] = (0.0, 0.0, 1.0)  # the coarse level fits no perspective
    # ECC finds W with vi(x) ~ ir(W x): the visible -> infrared map, the inverse of ours.
    W = np.linalg.inv(H_level)
    W /= W[2, 2]
    start = W if motion == cv2.MOTION_HOMOGRAPHY else W[:2]
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, options.iterations, options.epsilon)
    try:
        correlation, found = cv2.findTransformECC(level.vi, level.ir, start.astype(np.float32), motion, criteria, None, 3)
    except cv2.error as exc:
        log.debug("ECC did not converge: %s", str(exc).strip()[-120:])
        return H, _overlap_correlation(level.vi, level.ir, level.to_level(H))
    H_new = np.linalg.inv(normalise_homography(found.astype(np.float64)))
    if not _plausible(H_new, image_size(level.ir), image_size(level.vi)):
        log.debug("ECC collapsed the overlap; step ignored")
        return H, _overlap_correlation(level.vi, level.ir, level.to_level(H))
    return level.from_level(H_new), float(correlation)


# --- helpers ------------------------------------------------------------------------------


def corner_distance(H_a: np.ndarray, H_b: np.ndarray, source_size: Size) -> float:
    """Largest distance between where two maps send the source's corners (destination pixels)."""
    corners = image_corners(source_size)
    return float(np.max(np.hypot(*(apply_homography(H_a, corners) - apply_homography(H_b, corners)).T)))


def _overlap_correlation(vi: np.ndarray, ir: np.ndarray, H_level: np.ndarray) -> float:
    """Zero-mean normalised correlation of vi and the warped ir over their overlap."""
    warped, mask = _warp(ir, H_level, image_size(vi))
    if cv2.countNonZero(mask) < 0.1 * mask.size:
        return float("nan")
    return float(cv2.computeECC(vi, warped, mask))


def _warp(image: np.ndarray, H: np.ndarray, size: Size) -> tuple[np.ndarray, np.ndarray]:
    warped = cv2.warpPerspective(image, H, size, flags=cv2.INTER_LINEAR)
    ones = np.full(image.shape[:2], 255, np.uint8)
    mask = cv2.warpPerspective(ones, H, size, flags=cv2.INTER_NEAREST)
    return warped, cv2.erode(mask, np.ones((5, 5), np.uint8))


def _plausible(H: np.ndarray, source_size: Size, destination_size: Size) -> bool:
    """The source frame maps to a convex quad that overlaps the destination by a fair amount."""
    quad = apply_homography(H, image_corners(source_size)).astype(np.float32)
    if not np.all(np.isfinite(quad)) or not cv2.isContourConvex(quad.reshape(-1, 1, 2)):
        return False
    destination = image_corners(destination_size).astype(np.float32)
    overlap, _ = cv2.intersectConvexConvex(quad, destination)
    smaller = min(cv2.contourArea(quad), cv2.contourArea(destination))
    return smaller > 0 and overlap >= 0.1 * smaller


def _pixel_ratio(H: np.ndarray, source_size: Size) -> float:
    """Destination pixels per source pixel at the source's centre (sqrt of the area ratio)."""
    x, y = (source_size[0] - 1) / 2, (source_size[1] - 1) / 2
    samples = apply_homography(H, np.array([[x, y], [x + 1, y], [x, y + 1]]))
    jacobian = np.stack([samples[1] - samples[0], samples[2] - samples[0]], axis=1)
    ratio = math.sqrt(abs(np.linalg.det(jacobian)))
    return ratio if math.isfinite(ratio) and ratio > 0 else 1.0


def _resize(image: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Image resized by ``factor`` (area averaging) and the 3x3 map from old to new pixels."""
    if abs(factor - 1.0) < 1e-9:
        return image, np.eye(3)
    width, height = image_size(image)
    new_size = (max(8, round(width * factor)), max(8, round(height * factor)))
    resized = cv2.resize(image, new_size, interpolation=cv2.INTER_AREA)
    return resized, scaling(new_size[0] / width, new_size[1] / height)


def _centring(size: Size) -> np.ndarray:
    return np.array([[1.0, 0.0, -(size[0] - 1) / 2], [0.0, 1.0, -(size[1] - 1) / 2], [0.0, 0.0, 1.0]])


def _similarity(scale: float, angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), 0.0], [scale * math.sin(a), scale * math.cos(a), 0.0], [0, 0, 1.0]])


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
