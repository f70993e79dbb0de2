"""Colour conversion between RGB and YCrCb on float tensors in [0, 1].

The coefficients are OpenCV's for float images (``cv2.COLOR_RGB2YCrCb`` with delta 0.5),
which the authors used, so fused colour matches their outputs. Working in torch keeps the
conversion on the GPU next to the network instead of round-tripping through numpy.
"""

from __future__ import annotations

import torch
from torch import Tensor

_DELTA = 0.5  # chroma offset for float images
_CR_FROM_R_MINUS_Y = 0.713
_CB_FROM_B_MINUS_Y = 0.564


def rgb_to_y(rgb: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luma."""
    r, g, b = rgb.unbind(dim=-3)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def rgb_to_ycrcb(rgb: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> (B, 3, H, W) Y, Cr, Cb."""
    y = rgb_to_y(rgb)
    r, b = rgb[..., 0:1, :, :], rgb[..., 2:3, :, :]
    cr = (r - y) * _CR_FROM_R_MINUS_Y + _DELTA
    cb = (b - y) * _CB_FROM_B_MINUS_Y + _DELTA
    return torch.cat([y, cr, cb], dim=-3)


def ycrcb_to_rgb(ycrcb: Tensor) -> Tensor:
    """(B, 3, H, W) Y, Cr, Cb -> (B, 3, H, W) RGB (not clamped)."""
    y, cr, cb = ycrcb.unbind(dim=-3)
    cr = cr - _DELTA
    cb = cb - _DELTA
    r = y + 1.403 * cr
    g = y - 0.714 * cr - 0.344 * cb
    b = y + 1.773 * cb
    return torch.stack([r, g, b], dim=-3)


def merge_fused_y(fused_y: Tensor, visible_rgb: Tensor) -> Tensor:
    """Put the fused luma back with the visible image's chroma. Returns RGB clamped to [0, 1]."""
    crcb = rgb_to_ycrcb(visible_rgb)[..., 1:, :, :]
    return ycrcb_to_rgb(torch.cat([fused_y, crcb], dim=-3)).clamp(0, 1)
