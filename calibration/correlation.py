"""Masked normalised cross-correlation of two multi-channel images over every shift at once.

The global search scores each (scale, rotation) of the grid by the best correlation of the
oriented edges over all allowed shifts. Phase correlation (whitened spectra) finds one peak
cheaply, but across modalities the whitening lifts noise and the peak is often the wrong
one; the normalised correlation over the overlap is the score itself, maximised over the
shift exactly. Following Padfield ("Masked object registration in the Fourier domain",
IEEE TIP 2012), every sum over the overlap of the two masks is a correlation of masked
images, so one set of FFTs gives the normalised correlation at every shift.

Convention: ``surface[dy, dx]`` (after centring) scores fixed(x) ~ moving(x - (dx, dy)): the
moving image translated by (dx, dy) lies on the fixed one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MIN_OVERLAP = 0.2  # shifts where the masks share less than this share of the fixed image score nothing


@dataclass(frozen=True)
class Peak:
    shift: tuple[float, float]  # (dx, dy), sub-pixel
    score: float  # normalised correlation at the peak, in [-1, 1]


class MaskedCorrelation:
    """The fixed image's spectra, kept to correlate many moving images against it."""

    def __init__(self, fixed: np.ndarray, max_shift: float) -> None:
        if fixed.ndim == 2:
            fixed = fixed[:, :, None]
        height, width, self.channels = fixed.shape
        self.size = (height, width)
        self.max_shift = int(np.ceil(max_shift))
        # Zero padding by the largest shift: no shift in range wraps around.
        self.padded = (cv2.getOptimalDFTSize(height + self.max_shift + 1), cv2.getOptimalDFTSize(width + self.max_shift + 1))
        self.F = [self._dft(fixed[:, :, c]) for c in range(self.channels)]
        self.F_squares = self._dft(np.sum(fixed.astype(np.float32) ** 2, axis=2))
        self.F_mask = self._dft(np.ones((height, width), np.float32))

    def best_shift(self, moving: np.ndarray, mask: np.ndarray) -> Peak | None:
        """The shift within +- max_shift that maximises the correlation; None if no shift overlaps enough."""
        surface = self.surface(moving, mask)
        index = int(np.argmax(surface))
        peak_y, peak_x = np.unravel_index(index, surface.shape)
        score = float(surface[peak_y, peak_x])
        if not np.isfinite(score):
            return None
        sub_x = _parabola(surface[peak_y, peak_x - 1 : peak_x + 2]) if 0 < peak_x < surface.shape[1] - 1 else 0.0
        sub_y = _parabola(surface[peak_y - 1 : peak_y + 2, peak_x]) if 0 < peak_y < surface.shape[0] - 1 else 0.0
        return Peak((peak_x - self.max_shift + sub_x, peak_y - self.max_shift + sub_y), score)

    def surface(self, moving: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(2 s + 1, 2 s + 1) normalised correlation over shifts -s..s (s = max_shift); -inf where the overlap is too small.

        ``moving`` (h, w) or (h, w, C) is in the fixed image's frame; ``mask`` (h, w) marks
        where it is valid.
        """
        if moving.ndim == 2:
            moving = moving[:, :, None]
        weight = (mask > 0).astype(np.float32)
        moving = moving.astype(np.float32) * weight[:, :, None]
        G = [self._dft(moving[:, :, c]) for c in range(self.channels)]
        G_mask, G_squares = self._dft(weight), self._dft(np.sum(moving**2, axis=2))
        overlap = self._correlate(self.F_mask, G_mask)
        cross = self._correlate_sum(self.F, G)
        fixed_sums = [self._correlate(F, G_mask) for F in self.F]  # sum of the fixed image over the overlap
        moving_sums = [self._correlate(self.F_mask, g) for g in G]
        fixed_squares = self._correlate(self.F_squares, G_mask)
        moving_squares = self._correlate(self.F_mask, G_squares)
        safe = np.maximum(overlap, 1.0)
        numerator = cross - sum(f * m for f, m in zip(fixed_sums, moving_sums)) / safe
        fixed_variance = fixed_squares - sum(f * f for f in fixed_sums) / safe
        moving_variance = moving_squares - sum(m * m for m in moving_sums) / safe
        denominator = np.sqrt(np.maximum(fixed_variance * moving_variance, 1e-12))
        score = np.where(overlap >= MIN_OVERLAP * self.size[0] * self.size[1], numerator / denominator, -np.inf)
        return self._centred(score)

    def _dft(self, image: np.ndarray) -> np.ndarray:
        padded = np.zeros(self.padded, np.float32)
        padded[: image.shape[0], : image.shape[1]] = image
        return cv2.dft(padded, flags=cv2.DFT_COMPLEX_OUTPUT)

    def _correlate(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """sum_x a(x) b(x - t) for every t, circularly: (padded h, padded w)."""
        return cv2.idft(cv2.mulSpectrums(A, B, 0, conjB=True), flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE)

    def _correlate_sum(self, As: list[np.ndarray], Bs: list[np.ndarray]) -> np.ndarray:
        product = sum(cv2.mulSpectrums(A, B, 0, conjB=True) for A, B in zip(As, Bs))
        return cv2.idft(product, flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE)

    def _centred(self, circular: np.ndarray) -> np.ndarray:
        """Shifts -s..s on both axes out of the circular layout (negative shifts wrap to the end)."""
        s = self.max_shift
        rows = np.r_[np.arange(-s, 0) % circular.shape[0], np.arange(0, s + 1)]
        cols = np.r_[np.arange(-s, 0) % circular.shape[1], np.arange(0, s + 1)]
        return circular[np.ix_(rows, cols)]


def _parabola(values: np.ndarray) -> float:
    if len(values) != 3 or not np.all(np.isfinite(values)):
        return 0.0
    left, centre, right = values
    curvature = left - 2 * centre + right
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0
