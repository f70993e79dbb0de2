"""Image helpers that every estimator shares: gray conversion, contrast, gradients, warping.

Coordinates follow OpenCV: pixel (0, 0) is the centre of the top-left pixel, and a
homography ``H`` maps source pixels (x, y, 1) to destination pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ldfusion.imageio import unit_to_uint8

Size = tuple[int, int]  # (width, height)
SIZE_FORM = "WIDTHxHEIGHT like 640x480"  # how a size is written on the command line


def image_size(image: np.ndarray) -> Size:
    return int(image.shape[1]), int(image.shape[0])


def parse_size(text: str, form: str = SIZE_FORM) -> Size:
    """``"640x480"`` -> (640, 480); raises ValueError naming the text and the ``form`` expected."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected {form}, got {text!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"sizes must be positive, got {text!r}")
    return width, height


def to_gray_u8(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) RGB, uint8/uint16/float in [0, 1] -> (H, W) uint8."""
    if image.ndim == 3:
        image = image[:, :, :3].mean(axis=2) if image.dtype != np.uint8 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)
    return unit_to_uint8(image)


def to_gray_float(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1] from any image :func:`to_gray_u8` accepts."""
    if image.ndim == 2 and image.dtype in (np.float32, np.float64):
        return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)  # clip made the copy
    return to_gray_u8(image).astype(np.float32) / 255.0


def stretch_contrast(gray: np.ndarray, clip_limit: float = 3.0, tiles: int = 8) -> np.ndarray:
    """Percentile stretch then CLAHE: thermal targets often fill a few grey levels only."""
    low, high = np.percentile(gray, (1.0, 99.0))
    if high - low < 1:
        return gray.copy()
    stretched = np.clip((gray.astype(np.float32) - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
    return clahe.apply(stretched)


def _gradients(image: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    gray = to_gray_float(image)
    if sigma > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), sigma)
    return cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)


def gradient_magnitude(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Sobel gradient magnitude of a blurred image, (H, W) float32 with unit mean."""
    magnitude = cv2.magnitude(*_gradients(image, sigma))
    mean = float(magnitude.mean())
    return magnitude / mean if mean > 0 else magnitude


def edge_features(
    image: np.ndarray, sigma: float = 1.0, context: float = 8.0, floor: float = 0.3, oriented: bool = False
) -> np.ndarray:
    """Edges that infrared and visible images share: (H, W) float32, or (H, W, 3) if ``oriented``.

    Intensities differ between the modalities (a warm road is bright in one, dark in the
    other) but edges fall in the same places. The gradient magnitude is divided by its local
    average, so a faint thermal edge and a strong visible one weigh alike and no single bright
    region dominates a correlation; ``context`` is that average's Gaussian sigma and ``floor``
    (in units of the mean magnitude) keeps flat regions from turning noise into edges.

    ``oriented`` adds the edge direction as the doubled angle, (m cos 2a, m sin 2a, m): an edge
    and its polarity-flipped twin (dark-on-light vs light-on-dark) then look the same, and
    edges only match edges that run the same way.
    """
    gx, gy = _gradients(image, sigma)
    magnitude = cv2.magnitude(gx, gy)
    magnitude /= max(float(magnitude.mean()), 1e-12)
    evened = magnitude / (cv2.GaussianBlur(magnitude, (0, 0), context) + floor)
    if not oriented:
        return evened.astype(np.float32)
    doubled = 2.0 * np.arctan2(gy, gx)
    return np.dstack([evened * np.cos(doubled), evened * np.sin(doubled), evened]).astype(np.float32)


def scaling(factor_x: float, factor_y: float | None = None) -> np.ndarray:
    """3x3 map between pixel grids of one view at two resolutions (pixel centres kept)."""
    factor_y = factor_x if factor_y is None else factor_y
    return np.array(
        [[factor_x, 0.0, 0.5 * factor_x - 0.5], [0.0, factor_y, 0.5 * factor_y - 0.5], [0.0, 0.0, 1.0]], dtype=np.float64
    )


def size_ratio_homography(source_size: Size, destination_size: Size) -> np.ndarray:
    """The map that stretches the source frame over the destination frame (same field of view)."""
    return scaling(destination_size[0] / source_size[0], destination_size[1] / source_size[1])


def normalise_homography(H: np.ndarray) -> np.ndarray:
    H = np.asarray(H, dtype=np.float64)
    if H.shape == (2, 3):
        H = np.vstack([H, [0.0, 0.0, 1.0]])
    return H / H[2, 2]


def warp_to_destination(image: np.ndarray, H: np.ndarray, destination_size: Size, border_value: float = 0) -> np.ndarray:
    """The source image resampled into the destination frame (bilinear)."""
    return cv2.warpPerspective(
        image, H, destination_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border_value
    )


def valid_mask(source_size: Size, H: np.ndarray, destination_size: Size, erode: int = 0) -> np.ndarray:
    """(H, W) uint8 mask of destination pixels that the warped source covers."""
    ones = np.full((source_size[1], source_size[0]), 255, np.uint8)
    mask = cv2.warpPerspective(ones, H, destination_size, flags=cv2.INTER_NEAREST, borderValue=0)
    if erode > 0:
        mask = cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    return mask


def image_corners(size: Size) -> np.ndarray:
    """The four corner pixel centres of an image, (4, 2) float64."""
    width, height = size
    return np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float64)


def folds_the_frame(H: np.ndarray, size: Size) -> bool:
    """Whether H tears or folds the frame of ``size``: the line it sends to infinity crosses the
    frame (w changes sign between corners), or the corners land as a bow tie rather than a
    convex quad. Two swapped point pairs give such a map; no warp of a camera can."""
    corners = image_corners(size)
    w = H[2, 0] * corners[:, 0] + H[2, 1] * corners[:, 1] + H[2, 2]
    if not (np.all(w > 0) or np.all(w < 0)):
        return True
    quad = apply_homography(H, corners).astype(np.float32)
    return not (np.all(np.isfinite(quad)) and cv2.isContourConvex(quad.reshape(-1, 1, 2)))


def apply_homography(H: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points through H -> (N, 2)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 1, 2)
    return cv2.perspectiveTransform(points, np.asarray(H, dtype=np.float64)).reshape(-1, 2)


def corner_error(H_estimate: np.ndarray, H_true: np.ndarray, source_size: Size) -> float:
    """RMS distance, in destination pixels, between where two maps send the source's corners."""
    return rms_distance(H_estimate, H_true, image_corners(source_size))


def rms_distance(H_a: np.ndarray, H_b: np.ndarray, points: np.ndarray) -> float:
    """RMS distance between where two maps send ``points`` (N, 2)."""
    diff = apply_homography(H_a, points) - apply_homography(H_b, points)
    return float(np.sqrt(np.mean(np.sum(diff**2, axis=1))))


def reprojection_rms(H: np.ndarray, source_points: np.ndarray, destination_points: np.ndarray) -> float:
    diff = apply_homography(H, source_points) - np.asarray(destination_points, dtype=np.float64).reshape(-1, 2)
    return float(np.sqrt(np.mean(np.sum(diff**2, axis=1)))) if len(diff) else float("nan")


def pixel_ratio(H: np.ndarray, source_size: Size) -> float:
    """Destination pixels per source pixel at the source's centre (sqrt of the area ratio)."""
    x, y = (source_size[0] - 1) / 2, (source_size[1] - 1) / 2
    samples = apply_homography(H, np.array([[x, y], [x + 1, y], [x, y + 1]]))
    jacobian = np.stack([samples[1] - samples[0], samples[2] - samples[0]], axis=1)
    ratio = math.sqrt(abs(np.linalg.det(jacobian)))
    return ratio if math.isfinite(ratio) and ratio > 0 else 1.0


def resize_by(image: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Image resized by ``factor`` (area averaging) and the 3x3 map from old to new pixels."""
    if abs(factor - 1.0) < 1e-9:
        return image, np.eye(3)
    width, height = image_size(image)
    new_size = (max(8, round(width * factor)), max(8, round(height * factor)))
    resized = cv2.resize(image, new_size, interpolation=cv2.INTER_AREA)
    return resized, scaling(new_size[0] / width, new_size[1] / height)
