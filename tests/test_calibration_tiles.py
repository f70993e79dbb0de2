"""The pieces the scene registration rests on: correlation over all shifts, tile matching, robust fits."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from calibration_helpers import two_modality_scene

from calibration.correlation import MaskedCorrelation
from calibration.imaging import apply_homography, edge_features, to_gray_float
from calibration.tiles import TileMatches, fit_update, match_tiles, warped_edges


def _texture(shape, seed=0, sigma=2.0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.uniform(0, 1, shape).astype(np.float32), (0, 0), sigma)


@pytest.mark.parametrize("shift", [(7.3, -4.6), (-18.0, 11.5), (0.0, 0.0)])
def test_masked_correlation_finds_the_shift(shift):
    """The moving image, valid only where its mask says, translated by the returned shift lies on the fixed one."""
    fixed = _texture((120, 160, 3))
    M = np.float32([[1, 0, -shift[0]], [0, 1, -shift[1]]])
    moving = cv2.warpAffine(fixed, M, (160, 120))
    mask = cv2.warpAffine(np.ones((120, 160), np.float32), M, (160, 120), flags=cv2.INTER_NEAREST)
    peak = MaskedCorrelation(fixed, max_shift=25).best_shift(moving, mask)
    assert peak is not None and peak.score > 0.9
    assert np.allclose(peak.shift, shift, atol=0.5)


def test_masked_correlation_ignores_shifts_beyond_the_range():
    fixed = _texture((120, 160))
    moving = cv2.warpAffine(fixed, np.float32([[1, 0, 30], [0, 1, 0]]), (160, 120))
    mask = np.ones((120, 160), np.float32)
    peak = MaskedCorrelation(fixed, max_shift=10).best_shift(moving, mask)
    assert peak is not None and max(abs(peak.shift[0]), abs(peak.shift[1])) <= 10.5


def test_fit_update_recovers_a_homography_despite_outliers():
    """Tile shifts made by a known map, a quarter of them replaced by junk: the robust fit finds the map."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[20:460:24, 20:620:24]
    centres = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    G_true = np.array([[1.004, 0.003, -1.2], [-0.002, 0.997, 0.8], [2e-6, -1e-6, 1.0]])
    # Content at q in the warped image belongs at G_true q: q = G_true^-1 c.
    moved = apply_homography(np.linalg.inv(G_true), centres)
    shifts = moved - centres + rng.normal(0, 0.1, centres.shape)
    junk = rng.random(len(centres)) < 0.25
    shifts[junk] = rng.uniform(-4, 4, (int(junk.sum()), 2))
    n = len(centres)
    matches = TileMatches(centres, shifts, np.repeat(np.eye(2)[None], n, 0), np.full(n, 0.8), np.arange(n) % 2, n)
    fit = fit_update(matches, perspective=True)
    assert fit is not None
    corners = np.array([[0.0, 0.0], [639.0, 0.0], [639.0, 479.0], [0.0, 479.0]])
    assert np.abs(apply_homography(fit.G, corners) - apply_homography(G_true, corners)).max() < 0.3
    assert fit.inliers[junk].mean() < 0.5 and fit.inliers[~junk].mean() > 0.9


def test_fit_update_needs_enough_tiles():
    n = 3
    matches = TileMatches(np.zeros((n, 2)), np.zeros((n, 2)), np.repeat(np.eye(2)[None], n, 0), np.ones(n), np.zeros(n, int), n)
    assert fit_update(matches, perspective=True) is None


def test_tiles_see_a_cross_modal_shift():
    """Shapes with unrelated brightness and temperature: tiles find the infrared content 2.5 px away."""
    visible, thermal = two_modality_scene((320, 240), seed=2)
    vi_edges = edge_features(to_gray_float(visible), 1.0, oriented=True)
    H = np.array([[1.0, 0.0, 2.5], [0.0, 1.0, -1.5], [0.0, 0.0, 1.0]])  # infrared content lands 2.5 px right, 1.5 up
    ir_edges, mask = warped_edges(thermal, H, (320, 240))
    matches = match_tiles(vi_edges, ir_edges, mask, radius=4)
    assert len(matches) >= 20
    assert np.allclose(np.median(matches.shifts, axis=0), (2.5, -1.5), atol=0.25)
