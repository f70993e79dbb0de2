"""Tile matching on oriented edges, and the robust homography fit it drives.

The fine registration and its confidence both rest on one measurement: the visible image
is cut into half-overlapping tiles, and each tile's oriented edges
(:func:`calibration.imaging.edge_features`) are matched, by normalised correlation over a
small window of shifts, against the infrared image already warped into the visible frame
by the current estimate. A tile with shared structure finds where its content lies; a
tile that sees something one modality alone shows (a warm engine, a shadow) finds noise.

The update that moves the matched positions onto the tile centres is fitted by iteratively
reweighted least squares (Tukey's biweight), each tile weighted by how sharply its
correlation peaks in each direction (a tile holding one straight edge pins the shift
across the edge only). Unlike a global correlation fit (ECC), which every region pulls on,
tiles that see modality-specific content are outliers here and drop out, and the same
regions decide the fit whatever warp the infrared camera adds.

Convention: positions are pixels of the visible image at the level being fitted, OpenCV
pixel centres. A fitted update ``G`` (3x3) maps where content lies in the warped infrared
image to where it lies in the visible one, so the improved infrared -> visible map is
``G @ H``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from calibration.imaging import Size, apply_homography, edge_features, image_corners, image_size, resize_by, rms_distance

MIN_TILE_EDGES = 0.25  # mean evened edge strength a tile needs in both images to be matched at all
MIN_TILE_PEAK = 0.15  # correlation peaks below this are noise
TUKEY_C = 4.685  # biweight constant, in robust standard deviations
MIN_SCALE_PX = 0.5  # the robust scale never falls below this: tile shifts are not sharper than that
# Perspective is weakly pinned by tiles that cover part of the frame, and trades off against
# scale (a quadratic pattern of shifts, e.g. from lens distortion, fits either): a mild prior
# keeps it unchanged unless the tiles clearly ask for it. Relative to the mean of the affine terms.
PERSPECTIVE_PRIOR = 1.0
MIN_FIT_TILES = 6  # fewer usable tiles than this fit nothing


@dataclass(frozen=True)
class TileMatches:
    centres: np.ndarray  # (N, 2) tile centres, visible pixels at the level
    shifts: np.ndarray  # (N, 2) where each tile's content lies in the warped infrared, relative to its centre
    information: np.ndarray  # (N, 2, 2) how sharply each tile's correlation peaks, per direction; largest eigenvalue 1
    peaks: np.ndarray  # (N,) correlation peak heights
    blocks: np.ndarray  # (N,) 0 or 1: which half of a 2x2-tile checkerboard the tile lies in (held-out splits)
    tiles_total: int  # tiles inside the shared area, informative or not
    beyond: int = 0  # tiles with shared structure whose content lies beyond the window: they disagree

    def __len__(self) -> int:
        return len(self.centres)


def tile_size(width: int) -> int:
    """About a tenth of the width, even, within 24 to 48 pixels."""
    return int(min(48, max(24, round(width / 10) // 2 * 2)))


def match_tiles(vi_edges: np.ndarray, ir_edges: np.ndarray, mask: np.ndarray, radius: int, tile: int | None = None) -> TileMatches:
    """Match every tile of ``vi_edges`` in ``ir_edges`` (both (h, w, 3) oriented edges) within +- radius pixels.

    ``mask`` (h, w) uint8 marks where the warped infrared image is valid; a tile is used only
    when its whole search window lies inside it.
    """
    height, width = mask.shape
    tile = tile or tile_size(width)
    step = tile // 2
    centres, shifts, infos, peaks, blocks, total, beyond = [], [], [], [], [], 0, 0
    covered = cv2.integral(mask // 255)  # (h+1, w+1): sums of the valid mask over any window
    for iy, y in enumerate(range(radius, height - tile - radius + 1, step)):
        for ix, x in enumerate(range(radius, width - tile - radius + 1, step)):
            y0, x0, side = y - radius, x - radius, tile + 2 * radius
            inside = covered[y0 + side, x0 + side] - covered[y0, x0 + side] - covered[y0 + side, x0] + covered[y0, x0]
            if inside < side * side:
                continue
            total += 1
            template = vi_edges[y : y + tile, x : x + tile]
            window = ir_edges[y0 : y0 + side, x0 : x0 + side]
            if template[..., 2].mean() < MIN_TILE_EDGES or window[..., 2].mean() < MIN_TILE_EDGES:
                continue
            surface = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)  # (2r+1, 2r+1)
            peak = _subpixel_peak(surface)
            if peak is None:
                beyond += _peaks_beyond(surface)
                continue
            (dx, dy), information, height_at_peak = peak
            if height_at_peak < MIN_TILE_PEAK:
                continue
            centres.append((x + (tile - 1) / 2, y + (tile - 1) / 2))
            shifts.append((dx - radius, dy - radius))
            infos.append(information)
            peaks.append(height_at_peak)
            blocks.append((ix // 2 + iy // 2) % 2)
    return TileMatches(
        np.array(centres, np.float64).reshape(-1, 2),
        np.array(shifts, np.float64).reshape(-1, 2),
        np.array(infos, np.float64).reshape(-1, 2, 2),
        np.array(peaks, np.float64),
        np.array(blocks, np.int64),
        total,
        beyond,
    )


def joined(matches: list[TileMatches]) -> TileMatches:
    """The tiles of several frame pairs of one rig (same sizes, same map) as one set: fits and
    evidence then rest on every frame's shared structure at once."""
    if len(matches) == 1:
        return matches[0]
    return TileMatches(
        np.concatenate([m.centres for m in matches]),
        np.concatenate([m.shifts for m in matches]),
        np.concatenate([m.information for m in matches]),
        np.concatenate([m.peaks for m in matches]),
        np.concatenate([m.blocks for m in matches]),
        sum(m.tiles_total for m in matches),
        sum(m.beyond for m in matches),
    )


def _peaks_beyond(surface: np.ndarray) -> bool:
    """Whether a surface peaks clearly on its border: the tile's content lies further away than the window reaches."""
    _, height_at_peak, _, (px, py) = cv2.minMaxLoc(surface)
    rows, cols = surface.shape
    on_border = not (0 < px < cols - 1 and 0 < py < rows - 1)
    return on_border and height_at_peak >= MIN_TILE_PEAK and height_at_peak - float(np.median(surface)) > MIN_TILE_PEAK


def _subpixel_peak(surface: np.ndarray) -> tuple[tuple[float, float], np.ndarray, float] | None:
    """The peak of a correlation surface to sub-pixel precision, its curvature and height.

    None when the peak lies on the window's border (the true shift may lie beyond it) or
    the surface is not peaked (flat, or a saddle).
    """
    _, height_at_peak, _, (px, py) = cv2.minMaxLoc(surface)
    rows, cols = surface.shape
    if not (0 < px < cols - 1 and 0 < py < rows - 1):
        return None
    s = surface[py - 1 : py + 2, px - 1 : px + 2].astype(np.float64)
    gx, gy = (s[1, 2] - s[1, 0]) / 2, (s[2, 1] - s[0, 1]) / 2
    hxx, hyy = s[1, 2] - 2 * s[1, 1] + s[1, 0], s[2, 1] - 2 * s[1, 1] + s[0, 1]
    hxy = (s[2, 2] - s[2, 0] - s[0, 2] + s[0, 0]) / 4
    curvature = -np.array([[hxx, hxy], [hxy, hyy]])  # positive definite at a proper peak
    values, vectors = np.linalg.eigh(curvature)
    if values[1] <= 1e-6:
        return None
    values = np.clip(values, 0.02 * values[1], None)
    curvature = (vectors * values) @ vectors.T
    offset = np.clip(np.linalg.solve(curvature, [gx, gy]), -1.0, 1.0)
    information = curvature / values[1]  # direction only: the largest eigenvalue is 1
    return (px + offset[0], py + offset[1]), information, float(height_at_peak)


# --- the robust fit -------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    G: np.ndarray  # (3, 3) warped-infrared positions -> visible positions, level pixels
    weights: np.ndarray  # (N,) final robust weight of each tile, 0 for outliers
    scale_px: float  # robust standard deviation of the tile residuals, level pixels

    @property
    def inliers(self) -> np.ndarray:
        return self.weights > 0


def fit_update(matches: TileMatches, perspective: bool, select: np.ndarray | None = None, rounds: int = 6) -> Fit | None:
    """The homography (or affine map, without ``perspective``) that best moves matched content onto the tile centres.

    Gauss-Newton on the tiles' shifts, linearised about the identity (the shifts are small),
    each tile's residual measured through its information matrix; Tukey's biweight drops
    tiles that disagree. ``select`` restricts the fit to some tiles. None with too few tiles.
    """
    use = np.ones(len(matches), bool) if select is None else select
    if np.count_nonzero(use) < MIN_FIT_TILES:
        return None
    centres, shifts = matches.centres[use], matches.shifts[use]
    information = matches.information[use] * matches.peaks[use, None, None]
    origin = centres.mean(axis=0)
    spread = max(float(np.sqrt(np.mean(np.sum((centres - origin) ** 2, axis=1)))), 1.0)
    N = np.array([[1 / spread, 0, -origin[0] / spread], [0, 1 / spread, -origin[1] / spread], [0, 0, 1.0]])
    moved = (centres + shifts - origin) / spread  # normalised positions in the warped infrared
    J = _jacobian(moved, perspective)  # (n, 2, p)
    targets = -shifts / spread  # the update must move each tile by minus its shift
    robust = np.ones(len(moved))
    delta = np.zeros(J.shape[2])
    scale = MIN_SCALE_PX / spread
    for _ in range(rounds):
        W = information * robust[:, None, None]
        A = np.einsum("nip,nij,njq->pq", J, W, J)
        b = np.einsum("nip,nij,nj->p", J, W, targets)
        if perspective:
            A[6:, 6:] += PERSPECTIVE_PRIOR * np.trace(A[:6, :6]) / 6 * np.eye(2)
        try:
            delta = np.linalg.solve(A + 1e-9 * np.eye(len(b)), b)
        except np.linalg.LinAlgError:
            return None
        residual = np.einsum("nip,p->ni", J, delta) - targets  # (n, 2)
        distance = np.sqrt(np.einsum("ni,nij,nj->n", residual, matches.information[use], residual))
        scale = max(1.4826 * float(np.median(distance)), MIN_SCALE_PX / spread)
        robust = np.clip(1 - (distance / (TUKEY_C * scale)) ** 2, 0, None) ** 2
        if np.count_nonzero(robust) < MIN_FIT_TILES:
            return None
    G = np.linalg.inv(N) @ _update_matrix(delta, perspective) @ N
    weights = np.zeros(len(matches))
    weights[use] = robust
    return Fit(G / G[2, 2], weights, scale * spread)


def _jacobian(points: np.ndarray, perspective: bool) -> np.ndarray:
    """d(map(p))/d(params) at the identity for each point: (n, 2, 8) or (n, 2, 6)."""
    x, y = points[:, 0], points[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    rows = [
        np.stack([x, y, one, zero, zero, zero], axis=1),
        np.stack([zero, zero, zero, x, y, one], axis=1),
    ]
    if perspective:
        rows = [np.concatenate([rows[0], np.stack([-x * x, -x * y], axis=1)], axis=1), np.concatenate([rows[1], np.stack([-x * y, -y * y], axis=1)], axis=1)]
    return np.stack(rows, axis=1)


def _update_matrix(delta: np.ndarray, perspective: bool) -> np.ndarray:
    G = np.eye(3)
    G[0] += delta[0:3]
    G[1] += delta[3:6]
    if perspective:
        G[2, :2] += delta[6:8]
    return G


# --- how well the tiles pin the answer ----------------------------------------------------------


@dataclass(frozen=True)
class TileEvidence:
    """What the tiles say about a registration, in full-resolution visible pixels."""

    tiles_total: int  # tiles inside the shared area
    tiles_informative: int  # tiles with shared structure: a clear correlation peak, inside the window or beyond it
    tiles_agreeing: int  # informative tiles the robust fit keeps: their content is where H puts it
    residual_px: float  # robust spread of the agreeing tiles' remaining shifts
    held_out_px: float  # RMS corner distance between fits to two disjoint halves of the tiles, halved
    remaining_px: float  # RMS corner move the fit to all tiles would still make

    @property
    def agreeing_share(self) -> float:
        return self.tiles_agreeing / max(self.tiles_informative, 1)


def tile_evidence(matches: TileMatches, corners: np.ndarray, perspective: bool, pixel: float) -> TileEvidence:
    """Fit all tiles and two disjoint halves of them; ``corners`` (4, 2) are the infrared corners at the level.

    ``pixel`` is the size of one level pixel in full-resolution visible pixels. The two
    halves see different parts of the scene, so their fits differ about as much as the
    content pins the map at the corners: half their corner distance estimates how far the
    fit to all tiles may be off there (large when the shared structure is scarce or clustered).
    """
    full = fit_update(matches, perspective)
    if full is None:
        return TileEvidence(matches.tiles_total, len(matches) + matches.beyond, 0, math.inf, math.inf, math.inf)
    halves = [fit_update(matches, perspective, full.inliers & (matches.blocks == side)) for side in (0, 1)]
    if any(half is None for half in halves):
        held_out = math.inf
    else:
        held_out = 0.5 * rms_distance(halves[0].G, halves[1].G, corners) * pixel
    remaining = rms_distance(full.G, np.eye(3), corners) * pixel
    agreeing = int(np.count_nonzero(full.inliers))
    return TileEvidence(matches.tiles_total, len(matches) + matches.beyond, agreeing, full.scale_px * pixel, held_out, remaining)


# --- warping onto the visible frame -------------------------------------------------------------


def warped_edges(ir_gray: np.ndarray, H: np.ndarray, size: Size, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Oriented edges (h, w, 3) of the infrared image warped into a frame of ``size``, and the valid mask.

    The warp replicates the border so that the frame's edge makes no edge of its own; the
    mask, eroded by the edge filter's reach, says where the edges are real.
    """
    warped = cv2.warpPerspective(ir_gray, H, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ones = np.full(ir_gray.shape[:2], 255, np.uint8)
    mask = cv2.warpPerspective(ones, H, size, flags=cv2.INTER_NEAREST, borderValue=0)
    mask = cv2.erode(mask, np.ones((5, 5), np.uint8))
    return edge_features(warped, sigma, oriented=True), mask


def infrared_corners(H: np.ndarray, ir_size: Size) -> np.ndarray:
    """Where the infrared frame's corners land under H, (4, 2)."""
    return apply_homography(H, image_corners(ir_size))



def level_images(ir_gray: np.ndarray, vi_gray: np.ndarray, vi_per_ir: float, width: int):
    """Both images at one level: the visible one ``width`` pixels wide, the infrared one with pixels as big.

    Returns (vi (h, w), ir (h', w'), S_vi, S_ir) with S_* mapping full-resolution pixels to
    the level's. Matching pixel sizes keeps edge filters and tile windows alike in both.
    """
    vi_factor = min(1.0, width / image_size(vi_gray)[0])
    ir_factor = min(1.0, vi_factor * vi_per_ir)
    vi_small, S_vi = resize_by(vi_gray, vi_factor)
    ir_small, S_ir = resize_by(ir_gray, ir_factor)
    return vi_small, ir_small, S_vi, S_ir
