"""Structural similarity (Wang et al. 2004) with a Gaussian window, on torch tensors.

Shared by the distillation loss and the evaluation metrics: an 11x11 window with
sigma 1.5, K1 = 0.01, K2 = 0.03, statistics over the valid region (no padding), as in
the reference MATLAB ``ssim_index`` and scikit-image with ``gaussian_weights=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=torch.float32) -> Tensor:
    """(1, 1, size, size) normalised Gaussian kernel."""
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(x: Tensor, y: Tensor, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM of (B, C, H, W) tensors over the valid region: (B, C, H-10, W-10) for 11x11."""
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    channels = x.shape[1]
    window = gaussian_window(window_size, sigma, x.device, x.dtype).expand(channels, 1, -1, -1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, window, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM per sample: (B,)."""
    return ssim_map(x, y, data_range, window_size, sigma).flatten(1).mean(1)
