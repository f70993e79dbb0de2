"""The standard image-fusion metrics for a fused image F and its sources A (infrared) and B (visible).

Every function takes grey (luma) images on the 0-255 scale: (H, W) numpy arrays or torch
tensors of any real dtype, all three of the same shape. The work is vectorised numpy in
float64 with OpenCV doing the (separable) linear filtering; SSIM follows
``ldfusion.ssim.ssim_map``. A 640x480 triple scores all nine metrics in a fraction of a
second (``scripts/metrics_speed.py`` measures it).

The definitions follow the two evaluators most papers report with: the CDDFuse Python
``Evaluator`` (``utils/Evaluator.py`` in MMIF-CDDFuse) and the VIFB MATLAB toolbox. Where
the two disagree, or where either has a quirk, the docstring of the metric says which
convention is used here and how to convert. In short:

- EN, SD, SF, AG describe F alone; MI, SCD, VIF, Qabf, SSIM compare F with A and B.
- MI, VIF and SSIM are *sums* over the two sources (up to 2 for SSIM, about 2 for VIF).
- MI is in bits (log2). Both evaluators report nats: multiply by ln 2 = 0.693 to compare.
- Images are expected to hold integer grey levels, as CDDFuse reads them
  (``cv2.imread``, RGB -> grey, rounded); EN and MI round to integers before counting.

To score a colour fused image, score its luma ``Y = 0.299 R + 0.587 G + 0.114 B``
(rounded), as CDDFuse does; ``ldfusion eval`` does that for you. VIFB does not: it scores
each RGB channel of a colour image on its own and averages the three, so its numbers for
colour results are not comparable with luma scores.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import cv2
import numpy as np
import torch

from ldfusion.ssim import gaussian_window

log = logging.getLogger(__name__)

METRIC_NAMES = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")
_LEVELS = 256

ImageLike = np.ndarray | torch.Tensor


# --- input handling --------------------------------------------------------------------


def as_gray64(image: ImageLike, name: str = "image") -> np.ndarray:
    """(H, W) array or tensor on the 0-255 scale -> (H, W) contiguous float64 array."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a single-channel (H, W) image; got shape {array.shape}")
    if min(array.shape) < 2:
        raise ValueError(f"{name} must be at least 2x2 pixels; got {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name} must hold real grey levels; got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float64)


def _triple(fused: ImageLike, ir: ImageLike, vi: ImageLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f, a, b = as_gray64(fused, "fused"), as_gray64(ir, "ir"), as_gray64(vi, "vi")
    if not f.shape == a.shape == b.shape:
        raise ValueError(f"fused, ir and vi differ in size: {f.shape}, {a.shape}, {b.shape}")
    return f, a, b


def _levels(image: np.ndarray) -> np.ndarray:
    """Integer grey levels 0..255 (rounded, clipped), flattened, as int64."""
    return np.clip(np.rint(image), 0, _LEVELS - 1).astype(np.int64).ravel()


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(0.0 - (p * np.log2(p)).sum())  # 0 - x, not -x: one level gave -0.0, written "-0.000000"


# --- metrics of F alone ------------------------------------------------------------------


def entropy(fused: ImageLike) -> float:
    """EN: Shannon entropy in bits of the 256-bin grey-level histogram of F (rounded to 0..255).

    Same as CDDFuse ``EN`` and VIFB ``metricsEntropy``. An image using all 256 levels equally
    often gives 8; a constant image gives 0.
    """
    return _entropy_bits(np.bincount(_levels(as_gray64(fused, "fused")), minlength=_LEVELS))


def standard_deviation(fused: ImageLike) -> float:
    """SD: population standard deviation of F's grey levels (divides by H*W).

    Same as CDDFuse ``SD`` (``np.std``) and VIFB ``metricsVariance`` (which, despite the
    name, returns the standard deviation).
    """
    return float(as_gray64(fused, "fused").std())


def spatial_frequency(fused: ImageLike) -> float:
    """SF: ``sqrt(RF^2 + CF^2)`` with RF^2 the mean squared horizontal neighbour difference
    and CF^2 the mean squared vertical one, each averaged over its own number of differences.

    Same as CDDFuse ``SF``. VIFB divides both sums by H*W instead, which makes its value
    smaller by a factor between ``sqrt(1 - 1/W)`` and ``sqrt(1 - 1/H)`` (0.1 % at 640x480).
    """
    f = as_gray64(fused, "fused")
    row = np.square(np.diff(f, axis=1)).mean()
    col = np.square(np.diff(f, axis=0)).mean()
    return float(np.sqrt(row + col))


def average_gradient(fused: ImageLike) -> float:
    """AG: mean over all pixels of ``sqrt((Gx^2 + Gy^2) / 2)``, with Gx, Gy the central
    differences (one-sided at the borders, as ``np.gradient`` and MATLAB ``gradient``).

    Same as CDDFuse ``AG``. VIFB divides the sum by (H-1)(W-1) instead of H*W, which makes
    its value larger by ``HW / ((H-1)(W-1))`` (0.4 % at 640x480).
    """
    gy, gx = np.gradient(as_gray64(fused, "fused"))
    return float(np.sqrt((gx * gx + gy * gy) / 2).mean())


# --- metrics of F against the sources ----------------------------------------------------


def mutual_information_pair(x: ImageLike, y: ImageLike) -> float:
    """MI(X, Y) in bits from the 256x256 joint histogram of the rounded grey levels."""
    a, b = as_gray64(x, "x"), as_gray64(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"x and y differ in size: {a.shape} vs {b.shape}")
    return _mutual_information_bits(_levels(a), _levels(b))


def _mutual_information_bits(a: np.ndarray, b: np.ndarray) -> float:
    """H(a) + H(b) - H(a, b) for flattened integer levels."""
    joint = np.bincount(a * _LEVELS + b, minlength=_LEVELS * _LEVELS).reshape(_LEVELS, _LEVELS)
    return _entropy_bits(joint.sum(1)) + _entropy_bits(joint.sum(0)) - _entropy_bits(joint.ravel())


def mutual_information(fused: ImageLike, ir: ImageLike, vi: ImageLike) -> float:
    """MI: ``MI(A, F) + MI(B, F)`` in bits, from 256-bin (joint) histograms of the grey levels.

    CDDFuse (``sklearn.metrics.mutual_info_score``) and VIFB (``metricsMutinf``) both
    report nats: theirs = ours * ln 2. VIFB also min-max stretches each image to 0..255
    before binning; here the grey levels are binned as they are, as CDDFuse does.
    """
    f, a, b = (_levels(t) for t in _triple(fused, ir, vi))
    return _mutual_information_bits(a, f) + _mutual_information_bits(b, f)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0 when either input is constant (no linear relation to measure)."""
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum()) / denominator if denominator > 0 else 0.0


def scd(fused: ImageLike, ir: ImageLike, vi: ImageLike) -> float:
    """SCD (Aslantas & Bendes 2015): ``corr(A, F - B) + corr(B, F - A)``, Pearson correlations.

    Same as CDDFuse ``SCD``. Where a correlation is undefined because one side is constant
    (CDDFuse returns NaN), that term counts as 0. Range [-2, 2].
    """
    f, a, b = _triple(fused, ir, vi)
    return _correlation(a, f - b) + _correlation(b, f - a)


def _filter_valid(image: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    """'valid' 2-D filtering with the outer product of a symmetric 1-D kernel (no padding)."""
    r = len(kernel_1d) // 2
    same = cv2.sepFilter2D(image, cv2.CV_64F, kernel_1d, kernel_1d, borderType=cv2.BORDER_REFLECT)
    return same[r : image.shape[0] - r, r : image.shape[1] - r]


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """1-D factor of MATLAB ``fspecial('gaussian', size, sigma)``.

    fspecial zeroes taps below eps * max before normalising; for the windows used here the
    smallest tap is far above that, so the 2-D window is exactly the outer product.
    """
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


_VIF_NOISE_VARIANCE = 2.0  # sigma_n^2 of the HVS noise model
_VIF_EPS = 1e-10


def _vif_sums(ref: np.ndarray, dist: np.ndarray) -> tuple[float, float]:
    """Numerator and denominator of multi-scale pixel-domain VIF for one reference image."""
    num = den = 0.0
    for scale in range(1, 5):
        size = 2 ** (5 - scale) + 1  # 17, 9, 5, 3 taps
        window = _gaussian_1d(size, size / 5.0)
        if scale > 1 and min(ref.shape) >= size:
            ref = _filter_valid(ref, window)[::2, ::2]
            dist = _filter_valid(dist, window)[::2, ::2]
        if min(ref.shape) < size:
            break  # too small for this scale: tiny images use the finer scales only
        mu_r, mu_d = _filter_valid(ref, window), _filter_valid(dist, window)
        var_r = np.maximum(_filter_valid(ref * ref, window) - mu_r * mu_r, 0)
        var_d = np.maximum(_filter_valid(dist * dist, window) - mu_d * mu_d, 0)
        cov = _filter_valid(ref * dist, window) - mu_r * mu_d

        # Gain g and residual variance sv^2 of the distortion model d = g r + v, with the
        # special cases of the reference implementation (vifp_mscale.m), in its order.
        gain = cov / (var_r + _VIF_EPS)
        sv_sq = var_d - gain * cov
        flat_ref = var_r < _VIF_EPS
        gain[flat_ref] = 0
        sv_sq[flat_ref] = var_d[flat_ref]
        var_r[flat_ref] = 0
        flat_dist = var_d < _VIF_EPS
        gain[flat_dist] = 0
        sv_sq[flat_dist] = 0
        negative = gain < 0
        sv_sq[negative] = var_d[negative]
        gain[negative] = 0
        np.maximum(sv_sq, _VIF_EPS, out=sv_sq)

        num += float(np.log10(1 + gain * gain * var_r / (sv_sq + _VIF_NOISE_VARIANCE)).sum())
        den += float(np.log10(1 + var_r / _VIF_NOISE_VARIANCE).sum())
    return num, den


def vif_pair(ref: ImageLike, dist: ImageLike) -> float:
    """VIF of ``dist`` against the reference ``ref`` (see ``vif``); 1 when ``ref`` is flat."""
    r, d = as_gray64(ref, "ref"), as_gray64(dist, "dist")
    if r.shape != d.shape:
        raise ValueError(f"ref and dist differ in size: {r.shape} vs {d.shape}")
    num, den = _vif_sums(r, d)
    return num / den if den > 0 else 1.0


def vif(fused: ImageLike, ir: ImageLike, vi: ImageLike) -> float:
    """VIF (Sheikh & Bovik 2006), pixel-domain multi-scale version, summed over the sources:
    ``VIF(A -> F) + VIF(B -> F)``, each source the reference and F the distorted image.

    Four scales with Gaussian windows of 17, 9, 5, 3 taps (sigma = taps / 5), 'valid'
    filtering, 2x decimation between scales, HVS noise variance 2, and the special cases of
    the reference ``vifp_mscale.m``. This is what CDDFuse calls ``VIFF`` (it is VIF, not
    Han et al.'s VIFF). A flat source (zero denominator) scores 1 for its term, as there.
    Each term is 1 for F identical to its source; it exceeds 1 when F enhances contrast.
    """
    f, a, b = _triple(fused, ir, vi)
    return vif_pair(a, f) + vif_pair(b, f)


# Xydeas & Petrovic (2000) constants: the sigmoids for edge strength (g) and orientation (a).
QABF_TG, QABF_KG, QABF_DG = 0.9994, -15.0, 0.5
QABF_TA, QABF_KA, QABF_DA = 0.9879, -22.0, 0.8


def _sobel_strength_orientation(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge strength g and orientation alpha = atan(s_y / s_x) (pi/2 where s_x = 0).

    The responses are those of VIFB and CDDFuse: ``s_x = conv2(I, [-1 0 1; -2 0 2; -1 0 1], 'same')``
    and ``s_y = conv2(I, [1 2 1; 0 0 0; -1 -2 -1], 'same')``, zero-padded. conv2 flips the
    kernel; ``cv2.Sobel`` correlates with the unflipped Sobel kernels. Flipping the s_x kernel
    negates it, so s_x is minus OpenCV's d/dx; flipping the s_y kernel turns it into OpenCV's
    d/dy kernel, so s_y keeps its sign. The sign matters: alpha is compared between a source
    and F, and where one has s_x = 0 (pi/2, by the evaluators' rule) and the other a tiny
    s_x, a wrong sign of s_x puts their angles pi apart instead of nearly equal (horizontal
    edges crossed by a gentle horizontal ramp).
    """
    sx = -cv2.Sobel(image, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_CONSTANT)
    sy = cv2.Sobel(image, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_CONSTANT)
    strength = np.sqrt(sx * sx + sy * sy)
    vertical = sx == 0
    orientation = np.arctan(sy / np.where(vertical, 1.0, sx))
    orientation[vertical] = math.pi / 2
    return strength, orientation


def _edge_preservation(g_src: np.ndarray, a_src: np.ndarray, g_fused: np.ndarray, a_fused: np.ndarray) -> np.ndarray:
    """Q^{XF}: per-pixel preservation of the source's edge strength and orientation in F."""
    larger = np.maximum(g_src, g_fused)
    relative_strength = np.minimum(g_src, g_fused) / np.where(larger > 0, larger, 1.0)
    relative_strength[larger == 0] = 1.0  # no edge in either: weight g_src is 0 anyway
    relative_orientation = 1 - np.abs(a_src - a_fused) / (math.pi / 2)
    q_strength = QABF_TG / (1 + np.exp(QABF_KG * (relative_strength - QABF_DG)))
    q_orientation = QABF_TA / (1 + np.exp(QABF_KA * (relative_orientation - QABF_DA)))
    return q_strength * q_orientation


def qabf(fused: ImageLike, ir: ImageLike, vi: ImageLike) -> float:
    """Qabf (Xydeas & Petrovic 2000): edge information transferred from A and B to F,
    ``sum(Q^AF g_A + Q^BF g_B) / sum(g_A + g_B)`` with Sobel edge strength g and orientation
    alpha = atan(s_y / s_x) (pi/2 where s_x = 0; s_x and s_y with the signs of MATLAB's
    ``conv2``, see ``_sobel_strength_orientation``), and the usual constants
    Tg=0.9994, kg=-15, Dg=0.5, Ta=0.9879, ka=-22, Da=0.8.

    The Sobel responses are zero-padded at the image border (MATLAB ``conv2(..., 'same')``,
    as both evaluators do), so the border of a bright image counts as an edge.

    Matches VIFB ``metricsQabf`` and CDDFuse ``Qabf`` except for a quirk of theirs: where
    a source and F have exactly equal nonzero edge strength, they use g_F as the strength
    ratio instead of 1. For integer images (strengths >= 1 there) that changes that pixel's
    Q by less than 6e-4. With these constants the largest possible value (F reproducing
    every source edge exactly) is ``qabf_ceiling()`` = 0.9748, not 1. 0 when neither source
    has any edge.
    """
    f, a, b = _triple(fused, ir, vi)
    g_f, a_f = _sobel_strength_orientation(f)
    numerator = denominator = 0.0
    for source in (a, b):
        g_s, a_s = _sobel_strength_orientation(source)
        numerator += float((_edge_preservation(g_s, a_s, g_f, a_f) * g_s).sum())
        denominator += float(g_s.sum())
    return numerator / denominator if denominator > 0 else 0.0


def qabf_ceiling() -> float:
    """The Qabf of a perfect edge transfer (strength ratio 1, orientation agreement 1)."""
    q_strength = QABF_TG / (1 + math.exp(QABF_KG * (1 - QABF_DG)))
    q_orientation = QABF_TA / (1 + math.exp(QABF_KA * (1 - QABF_DA)))
    return q_strength * q_orientation


def ssim_sum(fused: ImageLike, ir: ImageLike, vi: ImageLike) -> float:
    """SSIM: ``SSIM(A, F) + SSIM(B, F)``, each the mean of the SSIM map (Wang et al. 2004)
    with a Gaussian 11x11 window, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 255, over the
    'valid' region: the definition of ``ldfusion.ssim.ssim_map`` (same window, same
    constants; the tests pin the two together).

    Same as VIFB ``metricsSsim``. CDDFuse calls scikit-image's ``structural_similarity`` on
    float64 images without ``data_range``, so scikit-image takes the float range [-1, 1]:
    ``data_range=2`` instead of 255 makes C1 and C2 about 16000 times smaller, which is the
    main reason its SSIM comes out 31-59% lower than this one on real fusion results (its
    7x7 uniform window matters much less). Up to 2; an image with itself scores 1.

    Computed here in float64 with OpenCV's separable filtering rather than by calling
    ``ssim_map``: its dense 11x11 convolution takes seconds per 640x480 image in float64,
    and float32 is off by up to 2e-5 on real images (the variances are small differences
    of large sums).
    """
    f, a, b = _triple(fused, ir, vi)
    if min(f.shape) < _SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels; got {f.shape}")
    return _ssim_mean(a, f) + _ssim_mean(b, f)


_SSIM_WINDOW, _SSIM_SIGMA = 11, 1.5
_SSIM_C1, _SSIM_C2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2


def _ssim_mean(x: np.ndarray, y: np.ndarray) -> float:
    # The 2-D window of ssim_map is an outer product; its 1-D factor is its row sums.
    window = gaussian_window(_SSIM_WINDOW, _SSIM_SIGMA, dtype=torch.float64)[0, 0].sum(dim=0).numpy()
    mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
    var_x = _filter_valid(x * x, window) - mu_x * mu_x
    var_y = _filter_valid(y * y, window) - mu_y * mu_y
    cov = _filter_valid(x * y, window) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + _SSIM_C1) * (2 * cov + _SSIM_C2)) / (
        (mu_x * mu_x + mu_y * mu_y + _SSIM_C1) * (var_x + var_y + _SSIM_C2)
    )
    return float(ssim.mean())


# --- everything at once ------------------------------------------------------------------

METRICS_OF_FUSED: dict[str, Callable[[ImageLike], float]] = {
    "EN": entropy,
    "SD": standard_deviation,
    "SF": spatial_frequency,
    "AG": average_gradient,
}
METRICS_AGAINST_SOURCES: dict[str, Callable[[ImageLike, ImageLike, ImageLike], float]] = {
    "MI": mutual_information,
    "SCD": scd,
    "VIF": vif,
    "Qabf": qabf,
    "SSIM": ssim_sum,
}


def evaluate_all(fused: ImageLike, ir: ImageLike, vi: ImageLike) -> dict[str, float]:
    """All nine metrics of F (``fused``) against A (``ir``) and B (``vi``), keyed as ``METRIC_NAMES``."""
    f, a, b = _triple(fused, ir, vi)
    if 0 < max(f.max(), a.max(), b.max()) <= 1.0:
        log.warning("all three images lie within [0, 1]; the metrics expect grey levels on the 0-255 scale")
    scores = {name: fn(f) for name, fn in METRICS_OF_FUSED.items()}
    scores.update({name: fn(f, a, b) for name, fn in METRICS_AGAINST_SOURCES.items()})
    return {name: scores[name] for name in METRIC_NAMES}
