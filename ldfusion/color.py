"""Colour conversion between RGB, YCrCb and video planes on tensors, on any device.

The coefficients are OpenCV's for float images (``cv2.COLOR_RGB2YCrCb`` with delta 0.5),
which the authors used, so fused colour matches their outputs. Working in torch keeps the
conversion on the GPU next to the network instead of round-tripping through numpy.
"""

from __future__ import annotations

from collections.abc import Callable

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
# ("MPEG", Y in 16..235, chroma in 16..240) is stretched to full. The chroma of 4:2:0
# video stays at half resolution (``YCrCbBatch``) until something needs it at full
# resolution (RGB, a warp of the visible image, an odd crop); it is then upsampled by
# repetition (each sample covers its 2x2 luma block), which the 2x2 average of
# ``ycrcb_to_yuv420p`` undoes exactly. So the visible chroma reaches an MP4 sink unchanged,
# and the fusion, which needs only Y, never pays for chroma. Tensors are (B, C, H, W);
# everything runs on the tensors' device.

_LIMITED_Y = (16.0, 219.0)  # offset, span of limited-range luma in 8-bit codes
_LIMITED_C = (128.0, 224.0)  # centre, span of limited-range chroma


def luma_to_unit(y: Tensor, full_range: bool) -> Tensor:
    """uint8 luma -> float in [0, 1] (full range; limited range stretched, clamped)."""
    if full_range:
        return y.float().div_(255.0)
    offset, span = _LIMITED_Y
    return y.float().sub_(offset).div_(span).clamp_(0.0, 1.0)


def chroma_to_unit(c: Tensor, full_range: bool) -> Tensor:
    """uint8 chroma -> float in [0, 1] centred on 0.5, as ``rgb_to_ycrcb`` gives it."""
    c = c.float()
    if full_range:
        return c.div_(255.0)
    centre, span = _LIMITED_C
    return c.sub_(centre).div_(span).add_(0.5).clamp_(0.0, 1.0)


def upsample_chroma(c: Tensor, height: int, width: int) -> Tensor:
    """(B, C, ceil(H/2), ceil(W/2)) -> (B, C, H, W) by repeating each sample over its 2x2 block."""
    b, channels, h, w = c.shape
    c = c[:, :, :, None, :, None].expand(b, channels, h, 2, w, 2).reshape(b, channels, 2 * h, 2 * w)
    return c[..., :height, :width]


class YCrCbBatch:
    """Frames on the device as full-range Y (B, 1, H, W) and Cr, Cb (B, 2, h, w), float in [0, 1].

    ``crcb`` is at full resolution (h, w = H, W) or, for 4:2:0 video, at half resolution
    (h, w = ceil(H/2), ceil(W/2)), left so until ``full`` or a crop that needs it.
    """

    def __init__(self, y: Tensor, crcb: Tensor) -> None:
        self.y = y
        self.crcb = crcb

    @property
    def subsampled(self) -> bool:
        return self.crcb.shape[-2:] != self.y.shape[-2:]

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.y.shape[0], 3, *self.y.shape[-2:])

    def full_chroma(self) -> Tensor:
        """(B, 2, H, W) Cr, Cb."""
        return upsample_chroma(self.crcb, *self.y.shape[-2:]) if self.subsampled else self.crcb

    def full(self) -> Tensor:
        """(B, 3, H, W) Y, Cr, Cb."""
        return torch.cat([self.y, self.full_chroma()], dim=1)

    def with_luma(self, y: Tensor) -> "YCrCbBatch":
        return YCrCbBatch(y, self.crcb)

    def crop(self, x: int, y: int, w: int, h: int) -> "YCrCbBatch":
        if (x, y, w, h) == (0, 0, self.y.shape[-1], self.y.shape[-2]):
            return self
        luma = self.y[..., y : y + h, x : x + w]
        if not self.subsampled:
            return YCrCbBatch(luma, self.crcb[..., y : y + h, x : x + w])
        if x % 2 or y % 2:  # the crop splits 2x2 blocks: chroma at full resolution first
            return YCrCbBatch(luma, self.full_chroma()[..., y : y + h, x : x + w])
        return YCrCbBatch(luma, self.crcb[..., y // 2 : (y + h + 1) // 2, x // 2 : (x + w + 1) // 2])

    @staticmethod
    def cat(parts: list["YCrCbBatch"]) -> "YCrCbBatch":
        """Along the batch; mixed chroma resolutions are brought to full resolution."""
        if len({p.subsampled for p in parts}) == 1:
            return YCrCbBatch(torch.cat([p.y for p in parts]), torch.cat([p.crcb for p in parts]))
        return YCrCbBatch(torch.cat([p.y for p in parts]), torch.cat([p.full_chroma() for p in parts]))

    @staticmethod
    def from_full(ycrcb: Tensor) -> "YCrCbBatch":
        return YCrCbBatch(ycrcb[:, :1], ycrcb[:, 1:])


def gray_to_ycrcb(y: Tensor, full_range: bool = True) -> Tensor:
    """(B, H, W) uint8 luma -> (B, 3, H, W) Y, Cr, Cb with neutral chroma."""
    luma = luma_to_unit(y[:, None], full_range)
    return torch.cat([luma, torch.full_like(luma, _DELTA).expand(-1, 2, -1, -1)], dim=1)


def packed_to_ycrcb(image: Tensor, bgr: bool = False) -> Tensor:
    """(B, H, W, 3) uint8 RGB (or BGR, as OpenCV cameras give it) -> (B, 3, H, W) Y, Cr, Cb."""
    rgb = image.permute(0, 3, 1, 2).float().div_(255.0)
    return rgb_to_ycrcb(rgb.flip(1) if bgr else rgb)


def ycrcb_to_yuv420p(ycrcb: Tensor | YCrCbBatch) -> tuple[Tensor, Tensor, Tensor]:
    """Y, Cr, Cb in [0, 1] -> limited-range uint8 planes Y (B, H, W), U and V (B, ceil(H/2),
    ceil(W/2)). Full-resolution chroma is averaged over each 2x2 block (edges repeated);
    half-resolution chroma is used as it is."""
    batch = ycrcb if isinstance(ycrcb, YCrCbBatch) else YCrCbBatch.from_full(ycrcb)
    height, width = batch.y.shape[-2:]
    offset, span = _LIMITED_Y
    y = batch.y[:, 0].clamp(0.0, 1.0).mul(span).add_(offset)
    crcb = batch.crcb
    if not batch.subsampled:
        crcb = F.avg_pool2d(F.pad(crcb, (0, width % 2, 0, height % 2), mode="replicate"), 2)
    centre, span_c = _LIMITED_C
    crcb = crcb.clamp(0.0, 1.0).sub_(0.5).mul_(span_c).add_(centre)
    as_u8 = lambda x: x.round_().to(torch.uint8)  # noqa: E731
    return as_u8(y), as_u8(crcb[:, 1].contiguous()), as_u8(crcb[:, 0].contiguous())


def ycrcb_to_rgb_u8(ycrcb: Tensor | YCrCbBatch) -> Tensor:
    """Y, Cr, Cb -> (B, H, W, 3) RGB uint8, rounded."""
    full = ycrcb.full() if isinstance(ycrcb, YCrCbBatch) else ycrcb
    rgb = ycrcb_to_rgb(full).clamp_(0.0, 1.0)
    return rgb.mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


Upload = Callable[[list[np.ndarray]], Tensor]  # same-shaped host arrays -> one stacked tensor on the device


def _upload(planes: list[Planes], index: int, device: torch.device | str, upload: Upload | None = None) -> Tensor:
    arrays = [p.data[index] for p in planes]
    if upload is not None:
        return upload(arrays)
    stacked = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)  # one frame: a view, no copy
    return torch.from_numpy(stacked).to(device, non_blocking=True)


def planes_to_batch(planes: list[Planes], device: torch.device | str = "cpu", upload: Upload | None = None) -> YCrCbBatch:
    """Same-layout, same-size frames -> ``YCrCbBatch`` on ``device`` (uploaded as uint8,
    by ``upload`` when given: e.g. through reusable pinned buffers)."""
    first = planes[0]
    if first.layout == YUV420:
        y, u, v = (_upload(planes, i, device, upload) for i in range(3))
        return YCrCbBatch(luma_to_unit(y[:, None], first.full_range), chroma_to_unit(torch.stack([v, u], dim=1), first.full_range))
    if first.layout == GRAY:
        y = luma_to_unit(_upload(planes, 0, device, upload)[:, None], first.full_range)
        b, _, height, width = y.shape
        return YCrCbBatch(y, torch.full((b, 2, (height + 1) // 2, (width + 1) // 2), _DELTA, device=y.device))
    return YCrCbBatch.from_full(packed_to_ycrcb(_upload(planes, 0, device, upload), bgr=first.layout == BGR))


def planes_to_ycrcb(planes: list[Planes], device: torch.device | str = "cpu") -> Tensor:
    """Same-layout, same-size frames -> (B, 3, H, W) Y, Cr, Cb on ``device``."""
    return planes_to_batch(planes, device).full()


def planes_to_luma(planes: list[Planes], device: torch.device | str = "cpu", upload: Upload | None = None) -> Tensor:
    """Same-size frames -> (B, 1, H, W) luma in [0, 1] on ``device``; only Y is uploaded."""
    first = planes[0]
    if first.layout in (YUV420, GRAY):
        return luma_to_unit(_upload(planes, 0, device, upload)[:, None], first.full_range)
    return planes_to_batch(planes, device, upload).y


def planes_to_image(planes: Planes) -> np.ndarray:
    """One frame on the host, for consumers that need pixels: (H, W, 3) RGB uint8 for colour,
    (H, W) uint8 full-range luma for gray."""
    if planes.layout == GRAY:
        return (luma_to_unit(torch.from_numpy(planes.data[0])[None, None], planes.full_range) * 255.0).round_().to(torch.uint8)[0, 0].numpy()
    return ycrcb_to_rgb_u8(planes_to_batch([planes]))[0].numpy()
