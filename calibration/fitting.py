"""Fitting a homography or an affine map to point correspondences."""

from __future__ import annotations

import cv2
import numpy as np

from calibration.fileformat import CalibrationError
from calibration.imaging import normalise_homography

MIN_POINTS = {"homography": 4, "affine": 3}
OUTLIER_THRESHOLD_PX = 2.0  # points farther than this from a robust fit are outliers


def fit_homography(
    src: np.ndarray, dst: np.ndarray, model: str = "homography", robust: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``model`` mapping src -> dst; returns (H (3, 3), inlier mask (N,) bool).

    ``robust`` first screens outliers (USAC MAGSAC for a homography, RANSAC for affine) and
    then fits least squares on the inliers; otherwise every point is used. Raises
    ``CalibrationError`` for too few or degenerate (collinear, repeated) points.
    """
    if model not in MIN_POINTS:
        raise CalibrationError(f"model must be one of {tuple(MIN_POINTS)}; got {model!r}")
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    need = MIN_POINTS[model]
    if len(src) < need:
        raise CalibrationError(f"a {model} needs at least {need} point pairs; got {len(src)}")
    for name, points in (("source", src), ("destination", dst)):
        if not _spans_plane(points):
            raise CalibrationError(f"the {name} points are degenerate: they lie on one line or repeat")
    inliers = _robust_inliers(src, dst, model) if robust and len(src) > need else np.ones(len(src), bool)
    if inliers.sum() < need:
        raise CalibrationError(f"only {int(inliers.sum())} point pairs agree on one {model}; need {need}")
    return least_squares(src[inliers], dst[inliers], model), inliers


def least_squares(src: np.ndarray, dst: np.ndarray, model: str) -> np.ndarray:
    """Least-squares ``model`` through all given points."""
    if model == "homography":
        H, _ = cv2.findHomography(src, dst, 0)
    else:
        design = np.hstack([src, np.ones((len(src), 1))])  # (N, 3) rows [x, y, 1]
        solution, _, rank, _ = np.linalg.lstsq(design, dst, rcond=None)  # (3, 2)
        H = np.vstack([solution.T, [0.0, 0.0, 1.0]]) if rank == 3 else None
    if H is None or not np.all(np.isfinite(H)) or abs(np.linalg.det(H)) < 1e-12:
        raise CalibrationError(f"could not fit a {model}: the points are degenerate (collinear or repeated)")
    return normalise_homography(H)


def _robust_inliers(src: np.ndarray, dst: np.ndarray, model: str) -> np.ndarray:
    src, dst = src.astype(np.float32), dst.astype(np.float32)  # estimateAffine2D takes float32 only
    if model == "homography":
        _, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, OUTLIER_THRESHOLD_PX, maxIters=5000, confidence=0.9999)
    else:
        _, mask = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=OUTLIER_THRESHOLD_PX)
    if mask is None:
        raise CalibrationError(f"could not fit a {model}: no subset of the points agrees")
    return mask.reshape(-1).astype(bool)


def _spans_plane(points: np.ndarray) -> bool:
    """False when the points (nearly) lie on one line or coincide."""
    centred = points - points.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False)
    return singular[0] > 1e-9 and singular[-1] / singular[0] > 1e-3
