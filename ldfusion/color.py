"""Colour conversion between RGB, YCrCb and video planes on tensors, on any device.

The coefficients are OpenCV's for float images (``cv2.COLOR_RGB2YCrCb`` with delta 0.5),
which the authors used, so fused colour matches their outputs. Working in torch keeps the
conversion on the GPU next to the network instead of round-tripping through numpy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ldfusion.video import BGR, GRAY, YUV420, Planes

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


# --- video planes ------------------------------------------------------------------------
#
# Convention. The fusion works in the authors' full-range YCrCb, floats in [0, 1], channel
# order Y, Cr, Cb. An image (RGB) gets there by ``rgb_to_ycrcb`` above, which is exactly
# full-range BT.601 (JPEG) YCbCr. A video frame keeps its own Y, Cb and Cr (BT.601 or
# BT.709, whatever it was encoded with) and only has its range converted: limited-range
# ("MPEG", Y in 16..235, chroma in 16..240) is stretched to full. Chroma planes of 4:2:0
# video are upsampled by repetition (each sample covers its 2x2 luma block), which
# ``ycrcb_to_yuv420p``'s 2x2 average undoes exactly, so the visible chroma reaches an MP4
# sink unchanged. Tensors are (B, C, H, W); everything runs on the tensors' device.

_LIMITED_Y = (16.0, 219.0)  # offset, span of limited-range luma in 8-bit codes
_LIMITED_C = (128.0, 224.0)  # centre, span of limited-range chroma


def luma_to_unit(y: Tensor, full_range: bool) -> Tensor:
    """(B, 1, H, W) uint8 luma -> float in [0, 1] (full range; limited range stretched, clamped)."""
    y = y.float()
    if full_range:
        return y.div_(255.0)
    offset, span = _LIMITED_Y
    return y.sub_(offset).div_(span).clamp_(0.0, 1.0)


def chroma_to_unit(c: Tensor, full_range: bool) -> Tensor:
    """uint8 chroma -> float in [0, 1] centred on 0.5, as ``rgb_to_ycrcb`` gives it."""
    c = c.float()
    if full_range:
        return c.div_(255.0)
    centre, span = _LIMITED_C
    return c.sub_(centre).div_(span).add_(0.5).clamp_(0.0, 1.0)


def upsample_chroma(c: Tensor, height: int, width: int) -> Tensor:
    """(B, C, ceil(H/2), ceil(W/2)) -> (B, C, H, W) by repeating each sample over its 2x2 block."""
    return c.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., :height, :width]


def yuv420p_to_ycrcb(y: Tensor, u: Tensor, v: Tensor, full_range: bool) -> Tensor:
    """uint8 planes (B, H, W), (B, h, w), (B, h, w) -> (B, 3, H, W) Y, Cr, Cb float in [0, 1]."""
    height, width = y.shape[-2:]
    luma = luma_to_unit(y[:, None], full_range)
    crcb = chroma_to_unit(torch.stack([v, u], dim=1), full_range)  # (B, 2, h, w): Cr is V, Cb is U
    return torch.cat([luma, upsample_chroma(crcb, height, width)], dim=1)


def gray_to_ycrcb(y: Tensor, full_range: bool = True) -> Tensor:
    """(B, H, W) uint8 luma -> (B, 3, H, W) Y, Cr, Cb with neutral chroma."""
    luma = luma_to_unit(y[:, None], full_range)
    return torch.cat([luma, torch.full_like(luma, _DELTA).expand(-1, 2, -1, -1)], dim=1)


def packed_to_ycrcb(image: Tensor, bgr: bool = False) -> Tensor:
    """(B, H, W, 3) uint8 RGB (or BGR, as OpenCV cameras give it) -> (B, 3, H, W) Y, Cr, Cb."""
    rgb = image.permute(0, 3, 1, 2).float().div_(255.0)
    return rgb_to_ycrcb(rgb.flip(1) if bgr else rgb)


def ycrcb_to_yuv420p(ycrcb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, 3, H, W) Y, Cr, Cb in [0, 1] -> limited-range uint8 planes Y (B, H, W), U and V
    (B, ceil(H/2), ceil(W/2)): chroma is the average of each 2x2 block (edges repeated)."""
    height, width = ycrcb.shape[-2:]
    offset, span = _LIMITED_Y
    y = ycrcb[:, 0].clamp(0.0, 1.0).mul(span).add_(offset)
    crcb = F.pad(ycrcb[:, 1:], (0, width % 2, 0, height % 2), mode="replicate")
    crcb = F.avg_pool2d(crcb, 2)
    centre, span_c = _LIMITED_C
    crcb = crcb.clamp(0.0, 1.0).sub_(0.5).mul_(span_c).add_(centre)
    as_u8 = lambda x: x.round_().to(torch.uint8)  # noqa: E731
    return as_u8(y), as_u8(crcb[:, 1].contiguous()), as_u8(crcb[:, 0].contiguous())


def ycrcb_to_rgb_u8(ycrcb: Tensor) -> Tensor:
    """(B, 3, H, W) Y, Cr, Cb -> (B, H, W, 3) RGB uint8, rounded."""
    rgb = ycrcb_to_rgb(ycrcb).clamp_(0.0, 1.0)
    return rgb.mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def planes_to_ycrcb(planes: list[Planes], device: torch.device | str = "cpu") -> Tensor:
    """Same-layout, same-size frames -> (B, 3, H, W) Y, Cr, Cb on ``device`` (uploaded as uint8)."""
    first = planes[0]
    parts = [torch.from_numpy(np.stack([p.data[i] for p in planes])).to(device, non_blocking=True) for i in range(len(first.data))]
    if first.layout == YUV420:
        return yuv420p_to_ycrcb(*parts, first.full_range)
    if first.layout == GRAY:
        return gray_to_ycrcb(parts[0], first.full_range)
    return packed_to_ycrcb(parts[0], bgr=first.layout == BGR)


def planes_to_luma(planes: list[Planes], device: torch.device | str = "cpu") -> Tensor:
    """Same-size frames -> (B, 1, H, W) luma in [0, 1] on ``device``; only Y is uploaded."""
    first = planes[0]
    if first.layout in (YUV420, GRAY):
        y = torch.from_numpy(np.stack([p.data[0] for p in planes])).to(device, non_blocking=True)
        return luma_to_unit(y[:, None], first.full_range)
    return planes_to_ycrcb(planes, device)[:, :1]


def planes_to_image(planes: Planes) -> np.ndarray:
    """One frame on the host, for consumers that need pixels: (H, W, 3) RGB uint8 for colour,
    (H, W) uint8 full-range luma for gray."""
    if planes.layout == GRAY:
        return (luma_to_unit(torch.from_numpy(planes.data[0])[None, None], planes.full_range) * 255.0).round_().to(torch.uint8)[0, 0].numpy()
    return ycrcb_to_rgb_u8(planes_to_ycrcb([planes]))[0].numpy()
