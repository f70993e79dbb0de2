"""Target-free registration from infrared/visible scene pairs: a global search, then refinement.

Infrared and visible intensities are unrelated (a warm road is bright in one, dark in the
other), but edges fall in the same places. Both images become edge maps
(:func:`calibration.imaging.edge_features`: gradient magnitude over its local average), and:

1. **Global search** over the declared range (:class:`SearchRange`): on small oriented-edge
   maps (``search_width`` pixels wide, edge direction as a doubled angle), every (scale,
   rotation) on a grid is tried, and for each the masked normalised correlation over every
   allowed shift (:mod:`calibration.correlation`) gives the best shift and its score. A local
   method alone (ECC from the identity) finds the nearest optimum, which on real rigs (a few
   degrees, a few percent of scale, 10 px) is often the wrong one.
2. **Refinement** of the best few distinct candidates (independent starts), coarse to fine, by
   tile matching and robust fits (:mod:`calibration.tiles`): the coarsest level fits affine
   updates in a wide window, the finer ones the full model (up to 640 px wide). Tiles that see
   what one modality alone shows drop out of the fit instead of pulling on it. The finished
   candidate with the most tile support wins.
3. **Confidence** (:func:`scene_confidence`): held-out tiles must agree with the answer
   (:func:`calibration.quality.registration_confidence`), and the answer must stay put when
   refined again on differently sampled images (the failures on real pairs are answers that
   the data do not pin: they wander with the sampling). The caller refuses a result whose
   confidence is below ``MIN_CONFIDENCE``.

Several frame pairs of one rig (:func:`register_frames`) are registered one by one and the
answer most frames agree on wins, so one blank or smoky frame cannot decide; it is then refined
on every frame's tiles at once, and its confidence measured on them all.

Convention: H maps infrared pixels (x, y, 1) to visible pixels, OpenCV pixel centres. The
search range is relative to the start (the frames stretched over each other, or ``init``),
about the visible frame's centre.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.correlation import MaskedCorrelation
from calibration.fileformat import CalibrationError
from calibration.imaging import (
    Size,
    apply_homography,
    edge_features,
    image_corners,
    image_size,
    normalise_homography,
    pixel_ratio,
    size_ratio_homography,
    to_gray_float,
)
from calibration.quality import Confidence, Residual, alignment_score, local_residual, registration_confidence
from calibration.tiles import fit_update, infrared_corners, joined, level_images, match_tiles, warped_edges

log = logging.getLogger(__name__)

MODELS = ("homography", "affine")
COARSE_RADIUS, COARSE_ROUNDS = 6, 3  # search level: tiles matched within +-6 pixels (24 at 640 wide), 3 fits
FINE_RADIUS, FINE_ROUNDS = 4, 8  # finer levels: the coarse answer is within a pixel or two there; fit until settled
SEARCH_SIGMA = 1.5  # the search level's edges are blurred this much (pixels): its grid is coarse
CONVERGED_PX = 0.05  # a fit that moves no corner further than this (level pixels) ends the level
MIN_CONFIDENCE = 0.5  # below this a result is refused (see scene_confidence); set on the benchmark (seed 0, 281 pairs)
RESAMPLING = 0.7  # the stability check refines again on a pyramid this much narrower
STABILITY_PX = 2.5  # a resampled refinement moving a corner this far halves the confidence; see quality.HELD_OUT_PX
# A second, independent resampling (a pyramid 0.85 times as wide) vetoes: a move beyond
# WANDER_PX there refuses the answer (score 0), a smaller one costs nothing. One resampling is
# one sample of how the answer wanders: on the benchmark a 6.3 px answer (seed 0, RoadScene
# FLIR_08874) moved 1.3 px at 0.7 and scored 0.50 but moved 3.6 px at 0.85, and a 12 px one
# (seed 1, TNO 23) moved 0.8 px and 3.2 px. The results written within ~3 px moved at most
# 2.2 px at 0.85 (58 and 63 written results, seeds 0 and 1).
SECOND_RESAMPLING = 0.85
WANDER_PX = 3.0
AGREEMENT_PX = 2.0  # two estimates within this corner distance (visible pixels) agree
# The declared search range's limits, (low, high), for SearchRange and the command's flags.
MAX_SCALE_LIMITS = (1.0, 2.0)
MAX_ROTATION_LIMITS_DEG = (0.0, 45.0)
MAX_SHIFT_LIMITS = (0.0, 0.45)  # of the visible width


@dataclass(frozen=True)
class SearchRange:
    """How far the rig may be from the start: the global search covers all of it."""

    max_scale: float = 1.25  # scales from 1/max_scale to max_scale
    max_rotation_deg: float = 10.0  # rotations within +- this
    max_shift: float = 0.15  # shifts within +- this fraction of the visible width (and height)

    def __post_init__(self) -> None:
        for name, limits in (("max_scale", MAX_SCALE_LIMITS), ("max_rotation_deg", MAX_ROTATION_LIMITS_DEG), ("max_shift", MAX_SHIFT_LIMITS)):
            check_within(getattr(self, name), limits, name)

    def scales(self, step: float = 0.045) -> np.ndarray:
        """Scale grid, even in log scale so that neighbours differ by about ``step`` (4.5 %)."""
        half = math.log(self.max_scale)
        count = max(1, 2 * math.ceil(half / step) + 1)
        return np.exp(np.linspace(-half, half, count))

    def rotations(self, step_deg: float = 2.0) -> np.ndarray:
        count = max(1, 2 * math.ceil(self.max_rotation_deg / step_deg) + 1)
        return np.linspace(-self.max_rotation_deg, self.max_rotation_deg, count)


def check_within(value: float, limits: tuple[float, float], name: str) -> None:
    """``value`` within ``limits`` (NaN is not), else an error naming ``name`` (a field or a flag)."""
    low, high = limits
    if not low <= value <= high:
        raise CalibrationError(f"{name} must be within {low:g} to {high:g}; got {value:g}")


@dataclass(frozen=True)
class SceneOptions:
    model: str = "homography"  # homography | affine
    search: SearchRange = field(default_factory=SearchRange)
    search_width: int = 160  # the global search works on edge maps this wide
    max_width: int = 640  # refinement works at most this wide; H is scaled back to full size
    starts: int = 4  # refine this many distinct global candidates at the search level
    # ... and the best this many of those at the finer levels. All four: with two, the right answer
    # sometimes lay with the third or fourth (30 benchmark pairs: 3 more failures, one 100 px off; 1.4x the time).
    finishers: int = 4

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise CalibrationError(f"model must be one of {MODELS}; got {self.model!r}")
        if self.search_width < 64 or self.max_width < self.search_width:
            raise CalibrationError("search_width must be >= 64 and max_width >= search_width")
        if not 1 <= self.finishers <= self.starts:
            raise CalibrationError(f"1 <= finishers <= starts is required; got {self.finishers} and {self.starts}")


@dataclass(frozen=True)
class SceneResult:
    H: np.ndarray  # (3, 3) infrared pixels -> visible pixels
    correlation: float  # edge correlation over the shared area (quality.alignment_score), in [-1, 1]
    residual: Residual  # remaining per-tile misalignment, visible pixels
    confidence: Confidence  # how far the data back the answer; see quality.registration_confidence
    method: str = "edge-tiles"

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
    for name, image in (("infrared", ir), ("visible", vi)):
        if np.ptp(image) == 0:  # it was refused as "the answer moves inf px when refined", which says nothing
            raise CalibrationError(f"the {name} image is one flat grey level: it shows nothing to register")
    ir_size, vi_size = image_size(ir), image_size(vi)
    start = size_ratio_homography(ir_size, vi_size) if init is None else normalise_homography(init)
    pyramid = Pyramid.build(ir, vi, start, options)
    candidates = global_search(pyramid, start, options)
    # Every candidate gets the coarse level; the best few by tile support go on to the finer ones.
    coarse = sorted((refine_level([pyramid], 0, H, options) for H in candidates), key=lambda step: -step.support)
    finished = [refine([pyramid], step.H, options, first_level=1) for step in coarse[: options.finishers]]
    finished.sort(key=lambda step: -step.support)
    best = finished[0]  # with no shared structure at all its support is 0 and the confidence below says so
    agreeing = sum(corner_distance(best.H, step.H, ir_size) < AGREEMENT_PX for step in finished)
    confidence = scene_confidence([(ir, vi)], best.H, options, starts_agreeing=agreeing, starts=len(finished))
    correlation = alignment_score(ir, vi, best.H)
    log.debug("scene: support %.1f, %d of %d starts agree, %s", best.support, agreeing, len(finished), confidence.describe())
    return SceneResult(best.H, correlation, local_residual(ir, vi, best.H), confidence)


def scene_confidence(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], H: np.ndarray, options: SceneOptions = SceneOptions(), starts_agreeing: int = 1,
    starts: int = 1,
) -> Confidence:
    """How far the data back H on (infrared, visible) frame pairs of one rig: held-out tiles
    (:func:`calibration.quality.registration_confidence`) and stability, every pair's tiles together.

    Stability: H refined again on images sampled differently (a pyramid 0.7 times as wide)
    must stay where it is. Where the shared structure pins the map, it does (within a pixel
    or two at the corners); where it does not (scarce or clustered structure, a flat or
    ambiguous optimum, lens distortion that no homography fits), the answer wanders with the
    sampling, and so it would with the camera's own. A second resampling (0.85) vetoes answers
    that one resampling happened to leave in place (``WANDER_PX``). ``calibrate verify`` reports
    this score too.
    """
    pairs = [(to_gray_float(ir), to_gray_float(vi)) for ir, vi in pairs]  # once: the three measurements below start from gray floats
    tiles = registration_confidence(pairs, H, starts_agreeing, starts)
    stability = resampled_drift(pairs, H, options)
    wander = resampled_drift(pairs, H, options, SECOND_RESAMPLING)
    level_pixel = image_size(pairs[0][1])[0] / min(options.max_width, image_size(pairs[0][1])[0])  # as the tiles' tolerance
    score = tiles.score / (1.0 + (stability / (STABILITY_PX * level_pixel)) ** 2) if wander <= WANDER_PX * level_pixel else 0.0
    return dataclasses.replace(tiles, score=float(score), stability_px=stability, wander_px=wander)


def resampled_drift(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], H: np.ndarray, options: SceneOptions = SceneOptions(), factor: float = RESAMPLING
) -> float:
    """How far (largest corner move, visible pixels) H moves when refined on pyramids ``factor`` times as wide."""
    top = min(options.max_width, image_size(pairs[0][1])[0])
    max_width = max(64, round(factor * top))
    other = dataclasses.replace(options, search_width=min(max_width, max(64, round(factor * options.search_width))), max_width=max_width)
    pyramids = [Pyramid.build(ir, vi, H, other) for ir, vi in pairs]
    if len(pyramids[0].levels) < 2:
        return 0.0
    step = refine(pyramids, H, other, first_level=1)
    return corner_distance(H, step.H, image_size(pairs[0][0])) if step.support > 0 else math.inf


def register_frames(
    pairs: list[tuple[np.ndarray, np.ndarray]], init: np.ndarray | None = None, options: SceneOptions = SceneOptions(),
    on_pair: Callable[[], None] | None = None,
) -> SceneResult:
    """Register several frame pairs of one rig: the answer most confident frames agree on,
    refined on all of them.

    Each pair is registered on its own. Every result votes for the others it agrees with
    (weighted by confidence), so a blank or smoky frame cannot decide. The winner is then
    refined on every pair's tiles at once, and the confidence is measured the same way: the
    frames' shared structure adds up, where each frame alone pins the map only to a few
    pixels (on the M3SVD clips single frames landed 2-3 px apart and were refused for it).
    ``on_pair`` is called as each pair's own registration ends (a progress bar).
    """
    if not pairs:
        raise CalibrationError("no frame pairs to register")
    sizes = {(image_size(ir), image_size(vi)) for ir, vi in pairs}
    if len(sizes) > 1:
        raise CalibrationError(f"the frame pairs differ in size ({', '.join(f'{a}/{b}' for a, b in sorted(sizes))}); one rig's frames share theirs")
    results, registered = [], []
    for index, (ir, vi) in enumerate(pairs):
        try:
            results.append(register_scene(ir, vi, init, options))
            registered.append(pairs[index])
        except CalibrationError as exc:
            log.info("frame pair %d: %s", index, exc)
        if on_pair is not None:
            on_pair()
    if not results:
        raise CalibrationError("no frame pair could be registered")
    if len(results) == 1:
        return results[0]
    ir_size = image_size(pairs[0][0])
    weights = np.array([max(r.confidence.score, 1e-3) for r in results])
    agree = np.array([[corner_distance(a.H, b.H, ir_size) < AGREEMENT_PX for b in results] for a in results])
    best = int(np.argmax(agree @ weights + 1e-6 * weights))
    winner = results[best]
    log.info("%d of %d frame pairs agree with the chosen registration; refining it on all of them", int(agree[best].sum()), len(results))
    pyramids = [Pyramid.build(ir, vi, winner.H, options) for ir, vi in registered]
    joint = refine(pyramids, winner.H, options, first_level=1)
    H = joint.H if joint.support > 0 else winner.H
    confidence = scene_confidence(registered, H, options, winner.confidence.starts_agreeing, winner.confidence.starts)
    confidence = dataclasses.replace(confidence, frames_agreeing=int(agree[best].sum()), frames=len(pairs))
    ir, vi = registered[best]
    return SceneResult(H, alignment_score(ir, vi, H), local_residual(ir, vi, H), confidence, winner.method)


# --- the pyramid ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    vi: np.ndarray  # (h, w) float32 visible gray at this level
    ir: np.ndarray  # (h', w') float32 infrared gray, pixel size matched to the visible one
    vi_edges: np.ndarray  # (h, w, 3) oriented edges of vi
    S_vi: np.ndarray  # (3, 3) full-resolution visible pixels -> this level's
    S_ir: np.ndarray  # (3, 3) full-resolution infrared pixels -> this level's

    def to_level(self, H: np.ndarray) -> np.ndarray:
        return normalise_homography(self.S_vi @ H @ np.linalg.inv(self.S_ir))

    def from_level(self, H_level: np.ndarray) -> np.ndarray:
        return normalise_homography(np.linalg.inv(self.S_vi) @ H_level @ self.S_ir)

    @property
    def pixel(self) -> float:
        """One level pixel in full-resolution visible pixels."""
        return 1.0 / self.S_vi[0, 0]


@dataclass(frozen=True)
class Pyramid:
    levels: list[Level]  # coarsest (the search level) first
    vi_size: Size
    ir_size: Size

    @staticmethod
    def build(ir: np.ndarray, vi: np.ndarray, start: np.ndarray, options: SceneOptions) -> Pyramid:
        """Gray images at search_width, then doubling up to max_width (or the visible width)."""
        ir_size, vi_size = image_size(ir), image_size(vi)
        top = min(options.max_width, vi_size[0])
        widths = [min(options.search_width, top)]
        while widths[-1] < top:
            widths.append(min(widths[-1] * 2, top))
        if len(widths) == 1:
            widths.append(top)  # a small image: the coarse fit, then the fine one at the same width
        vi_per_ir = pixel_ratio(start, ir_size)
        ir_gray, vi_gray = to_gray_float(ir), to_gray_float(vi)
        levels = []
        for width in widths:
            vi_small, ir_small, S_vi, S_ir = level_images(ir_gray, vi_gray, vi_per_ir, width)
            levels.append(Level(vi_small, ir_small, edge_features(vi_small, 1.0, oriented=True), S_vi, S_ir))
        return Pyramid(levels, vi_size, ir_size)


# --- global search ------------------------------------------------------------------------


def global_search(pyramid: Pyramid, start: np.ndarray, options: SceneOptions) -> list[np.ndarray]:
    """The best ``options.starts`` distinct similarity maps (full resolution) over the range."""
    level = pyramid.levels[0]
    vi_size = image_size(level.vi)
    centre = _centring(pyramid.vi_size)
    max_shift = options.search.max_shift * pyramid.vi_size[0] * level.S_vi[0, 0] + 2.0  # level pixels
    # Oriented edges (edge direction as a doubled angle) tell candidates apart better than
    # edge strength alone: clutter matches strength, rarely direction too.
    vi_oriented, ir_oriented = (edge_features(image, SEARCH_SIGMA, oriented=True) for image in (level.vi, level.ir))
    correlation = MaskedCorrelation(vi_oriented, max_shift)
    ones = np.ones(level.ir.shape[:2], np.float32)
    scored = []
    for scale in options.search.scales():
        for angle in options.search.rotations():
            H = np.linalg.inv(centre) @ _similarity(scale, angle) @ centre @ start
            H_level = level.to_level(H)
            warped = _rotate_directions(cv2.warpPerspective(ir_oriented, H_level, vi_size, flags=cv2.INTER_LINEAR), H_level)
            mask = cv2.erode(cv2.warpPerspective(ones, H_level, vi_size, flags=cv2.INTER_NEAREST), np.ones((3, 3), np.uint8))
            peak = correlation.best_shift(warped, mask)
            if peak is not None:
                scored.append((peak.score, level.from_level(_translation(*peak.shift) @ H_level), scale, angle))
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


def _rotate_directions(oriented: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Oriented edges (m cos 2a, m sin 2a, m) warped by H: their directions turn with H's rotation."""
    turn = 2.0 * math.atan2(H[1, 0] - H[0, 1], H[0, 0] + H[1, 1])  # doubled rotation angle of H's linear part
    cos, sin = math.cos(turn), math.sin(turn)
    c, s, m = oriented[..., 0], oriented[..., 1], oriented[..., 2]
    return np.dstack([c * cos - s * sin, c * sin + s * cos, m]).astype(np.float32)


# --- refinement ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    H: np.ndarray  # (3, 3) full resolution, infrared -> visible
    support: float  # sum over the tiles the last fit kept of weight x correlation peak: how much content agrees


def refine(pyramids: Sequence[Pyramid], H: np.ndarray, options: SceneOptions, first_level: int = 0) -> Step:
    """Tile matching and robust fits from ``H``, coarse to fine; the support is the finest level's.
    ``pyramids``: one frame pair's, or several of one rig (same sizes), fitted together."""
    step = Step(H, 0.0)
    for index in range(first_level, len(pyramids[0].levels)):
        step = refine_level(pyramids, index, step.H, options)
    return step


def refine_level(pyramids: Sequence[Pyramid], index: int, H: np.ndarray, options: SceneOptions) -> Step:
    """A few rounds of tile matching (in every pyramid) and robust fitting (of all tiles together) at one level.

    The coarsest level fits affine maps only (perspective is not visible at 160 pixels) and
    searches the widest window, since it starts from the global search's grid; the finer
    levels fit the full model in narrower windows.
    """
    level = pyramids[0].levels[index]  # the frames share sizes, so every pyramid's level maps alike
    perspective = options.model == "homography" and (index > 0 or len(pyramids[0].levels) == 1)
    radius, rounds = (COARSE_RADIUS, COARSE_ROUNDS) if index == 0 else (FINE_RADIUS, FINE_ROUNDS)
    size = image_size(level.vi)
    H_level = level.to_level(H)
    support = 0.0
    for _ in range(rounds):
        matches = joined([_level_matches(pyramid.levels[index], H_level, size, radius) for pyramid in pyramids])
        fit = fit_update(matches, perspective)
        if fit is None:
            break
        support = float(np.sum(fit.weights * matches.peaks))
        corners = infrared_corners(H_level, image_size(level.ir))
        moved = apply_homography(fit.G, corners) - corners
        H_level = normalise_homography(fit.G @ H_level)
        if options.model == "affine":
            H_level[2] = (0.0, 0.0, 1.0)
        if float(np.max(np.hypot(*moved.T))) < CONVERGED_PX:
            break
    if not _plausible(H_level, image_size(level.ir), size):
        return Step(H, 0.0)
    return Step(level.from_level(H_level), support)


def _level_matches(level: Level, H_level: np.ndarray, size: Size, radius: int):
    ir_edges, mask = warped_edges(level.ir, H_level, size)
    return match_tiles(level.vi_edges, ir_edges, mask, radius)


# --- helpers ------------------------------------------------------------------------------


def corner_distance(H_a: np.ndarray, H_b: np.ndarray, source_size: Size) -> float:
    """Largest distance between where two maps send the source's corners (destination pixels)."""
    corners = image_corners(source_size)
    return float(np.max(np.hypot(*(apply_homography(H_a, corners) - apply_homography(H_b, corners)).T)))


def _plausible(H: np.ndarray, source_size: Size, destination_size: Size) -> bool:
    """The source frame maps to a convex quad that overlaps the destination by a fair amount."""
    quad = apply_homography(H, image_corners(source_size)).astype(np.float32)
    if not np.all(np.isfinite(quad)) or not cv2.isContourConvex(quad.reshape(-1, 1, 2)):
        return False
    destination = image_corners(destination_size).astype(np.float32)
    overlap, _ = cv2.intersectConvexConvex(quad, destination)
    smaller = min(cv2.contourArea(quad), cv2.contourArea(destination))
    return smaller > 0 and overlap >= 0.1 * smaller


def _centring(size: Size) -> np.ndarray:
    return np.array([[1.0, 0.0, -(size[0] - 1) / 2], [0.0, 1.0, -(size[1] - 1) / 2], [0.0, 0.0, 1.0]])


def _similarity(scale: float, angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), 0.0], [scale * math.sin(a), scale * math.cos(a), 0.0], [0, 0, 1.0]])


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
