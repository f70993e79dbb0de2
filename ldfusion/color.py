"""Colour conversion between RGB, YCrCb and video planes on tensors, on any device.

The coefficients are OpenCV's for float images (``cv2.COLOR_RGB2YCrCb`` with delta 0.5),
which the authors used, so fused colour matches their outputs. Working in torch keeps the
conversion on the GPU next to the network instead of round-tripping through numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ldfusion.video import BGR, BT601, BT709, BT2020, GRAY, YUV420, Planes

_DELTA = 0.5  # chroma offset for float images
_CR_FROM_R_MINUS_Y = 0.713
_CB_FROM_B_MINUS_Y = 0.564
# Y, Cr, Cb -> RGB per matrix: Cr to R, Cr to G, Cb to G, Cb to B. BT.601 as OpenCV's float
# conversion has it (the authors' images, and every RGB source here); BT.709 and BT.2020
# from their Kr, Kb, for videos that state them (``Planes.matrix``).
_TO_RGB = {
    BT601: (1.403, 0.714, 0.344, 1.773),
    BT709: (1.5748, 0.46812, 0.18732, 1.8556),
    BT2020: (1.4746, 0.57135, 0.16455, 1.8814),
}
Matrix = str | tuple[str, ...]  # one for the whole batch, or one per row


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


def ycrcb_to_rgb(ycrcb: Tensor, matrix: Matrix = BT601) -> Tensor:
    """(B, 3, H, W) Y, Cr, Cb -> (B, 3, H, W) RGB (not clamped), by ``matrix``."""
    y, cr, cb = ycrcb.unbind(dim=-3)
    cr = cr - _DELTA
    cb = cb - _DELTA
    r_cr, g_cr, g_cb, b_cb = _to_rgb_coefficients(matrix, ycrcb.device)
    r = y + r_cr * cr
    g = y - g_cr * cr - g_cb * cb
    b = y + b_cb * cb
    return torch.stack([r, g, b], dim=-3)


def _to_rgb_coefficients(matrix: Matrix, device: torch.device) -> tuple[float, ...] | tuple[Tensor, ...]:
    """Numbers for one matrix; (B, 1, 1) tensors for a batch whose rows differ."""
    if isinstance(matrix, str) or len(set(matrix)) == 1:
        return _TO_RGB[matrix if isinstance(matrix, str) else matrix[0]]
    rows = torch.tensor([_TO_RGB[m] for m in matrix], device=device)  # (B, 4)
    return tuple(rows[:, i, None, None] for i in range(4))


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

_LIMITED_Y = (16, 235)  # limited-range 8-bit codes of luma 0 and 1
_LIMITED_C = (16, 240)  # limited-range 8-bit codes of chroma 0 and 1 (the centre, 128, is 0.5)
_FULL = (0, 255)


def codes_range(luma: bool, full_range: bool) -> tuple[int, int]:
    """The 8-bit codes of 0 and 1 for luma or chroma in full or limited range."""
    return _FULL if full_range else _LIMITED_Y if luma else _LIMITED_C


def luma_to_unit(y: Tensor, full_range: bool) -> Tensor:
    """uint8 luma -> float in [0, 1] (full range; limited range stretched, clamped)."""
    return codes_to_unit(y, torch.empty(y.shape, device=y.device), codes_range(True, full_range))


def chroma_to_unit(c: Tensor, full_range: bool) -> Tensor:
    """uint8 chroma -> float in [0, 1] centred on 0.5, as ``rgb_to_ycrcb`` gives it."""
    return codes_to_unit(c, torch.empty(c.shape, device=c.device), codes_range(False, full_range))


def codes_to_unit(codes: Tensor, out: Tensor, limits: tuple[int, int]) -> Tensor:
    """uint8 ``codes`` -> ``out`` float (same shape): codes ``limits`` map onto 0 and 1,
    codes outside them are clamped.

    The clamp and the offset run on uint8 (a quarter of float's bytes, and exact), so the
    float work is one converting copy and one multiplication. It multiplies by the
    reciprocal: a division costs several times more on the CPU, and differs from it only in
    the last bit of some values (a relative 6e-8).
    """
    low, high = limits
    if limits != _FULL:
        codes = codes.clamp(low, high).sub_(low)  # 0 .. high - low
    return out.copy_(codes).mul_(1.0 / (high - low))


def upsample_chroma(c: Tensor, height: int, width: int) -> Tensor:
    """(B, C, ceil(H/2), ceil(W/2)) -> (B, C, H, W) by repeating each sample over its 2x2 block."""
    b, channels, h, w = c.shape
    c = c[:, :, :, None, :, None].expand(b, channels, h, 2, w, 2).reshape(b, channels, 2 * h, 2 * w)
    return c[..., :height, :width]


@dataclass(frozen=True)
class ChromaCodes:
    """A video's chroma as its decoder gave it: (B, 2, h, w) uint8 codes, Cr (V) then Cb (U)."""

    codes: Tensor
    full_range: bool

    def to_unit(self) -> Tensor:
        return chroma_to_unit(self.codes, self.full_range)


class YCrCbBatch:
    """Frames on the device as full-range Y (B, 1, H, W) and Cr, Cb (B, 2, h, w), float in [0, 1].

    ``crcb`` is at full resolution (h, w = H, W) or, for 4:2:0 video, at half resolution
    (h, w = ceil(H/2), ceil(W/2)), left so until ``full`` or a crop that needs it.

    A video's chroma may be given as its 8-bit codes (``ChromaCodes``). They stay so until
    something reads ``crcb`` (RGB, side by side, a warp of the visible image), and
    ``ycrcb_to_yuv420p`` hands limited-range codes straight back to an MP4 sink. The fusion
    needs only Y, so the path from decoder to encoder never converts chroma: with an identity
    network at 640x512 the fusion thread's CPU time fell from 0.75 to 0.41 ms a frame.
    """

    def __init__(self, y: Tensor, crcb: Tensor | ChromaCodes, matrix: Matrix = BT601) -> None:
        self.y = y
        self._chroma = crcb
        self.matrix = matrix  # how Y, Cr, Cb become RGB: the video's own (``Planes.matrix``)

    @property
    def crcb(self) -> Tensor:
        """Cr, Cb as floats (converted from the codes on first use, then kept)."""
        if isinstance(self._chroma, ChromaCodes):
            self._chroma = self._chroma.to_unit()
        return self._chroma

    @property
    def chroma_codes(self) -> ChromaCodes | None:
        """The decoder's chroma codes when they have not been converted (else None)."""
        return self._chroma if isinstance(self._chroma, ChromaCodes) else None

    @property
    def subsampled(self) -> bool:
        return self._chroma_tensor.shape[-2:] != self.y.shape[-2:]

    @property
    def _chroma_tensor(self) -> Tensor:
        return self._chroma.codes if isinstance(self._chroma, ChromaCodes) else self._chroma

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
        return YCrCbBatch(y, self._chroma, self.matrix)

    def crop(self, x: int, y: int, w: int, h: int) -> "YCrCbBatch":
        if (x, y, w, h) == (0, 0, self.y.shape[-1], self.y.shape[-2]):
            return self
        luma = self.y[..., y : y + h, x : x + w]
        if not self.subsampled:
            return YCrCbBatch(luma, self._sliced_chroma(slice(y, y + h), slice(x, x + w)), self.matrix)
        if x % 2 or y % 2:  # the crop splits 2x2 blocks: chroma at full resolution first
            return YCrCbBatch(luma, self.full_chroma()[..., y : y + h, x : x + w], self.matrix)
        return YCrCbBatch(luma, self._sliced_chroma(slice(y // 2, (y + h + 1) // 2), slice(x // 2, (x + w + 1) // 2)), self.matrix)

    def row_matrices(self) -> tuple[str, ...]:
        return (self.matrix,) * self.y.shape[0] if isinstance(self.matrix, str) else self.matrix

    def _sliced_chroma(self, rows: slice, columns: slice) -> Tensor | ChromaCodes:
        if isinstance(self._chroma, ChromaCodes):
            return ChromaCodes(self._chroma.codes[..., rows, columns], self._chroma.full_range)
        return self._chroma[..., rows, columns]

    @staticmethod
    def cat(parts: list["YCrCbBatch"]) -> "YCrCbBatch":
        """Along the batch; mixed chroma resolutions are brought to full resolution (codes of
        different ranges, to floats). One part is returned as it is (no copy)."""
        if len(parts) == 1:
            return parts[0]
        y = torch.cat([p.y for p in parts])
        rows = tuple(m for p in parts for m in p.row_matrices())  # streams of other matrices may share a batch
        matrix = rows[0] if len(set(rows)) == 1 else rows
        codes = [p.chroma_codes for p in parts]
        if len({p.subsampled for p in parts}) == 1:
            if all(codes) and len({c.full_range for c in codes}) == 1:
                return YCrCbBatch(y, ChromaCodes(torch.cat([c.codes for c in codes]), codes[0].full_range), matrix)
            return YCrCbBatch(y, torch.cat([p.crcb for p in parts]), matrix)
        return YCrCbBatch(y, torch.cat([p.full_chroma() for p in parts]), matrix)

    @staticmethod
    def from_full(ycrcb: Tensor, matrix: Matrix = BT601) -> "YCrCbBatch":
        return YCrCbBatch(ycrcb[:, :1], ycrcb[:, 1:], matrix)


_NEUTRAL_CODE = 128  # limited-range chroma code of 0.5 (no colour): (128 - 16) / 224


def gray_batch(y: Tensor) -> YCrCbBatch:
    """(B, 1, H, W) full-range luma in [0, 1] -> a gray 4:2:0 batch: neutral chroma codes."""
    b, _, height, width = y.shape
    neutral = torch.full((b, 2, (height + 1) // 2, (width + 1) // 2), _NEUTRAL_CODE, dtype=torch.uint8, device=y.device)
    return YCrCbBatch(y, ChromaCodes(neutral, full_range=False))


def packed_to_ycrcb(image: Tensor, bgr: bool = False) -> Tensor:
    """(B, H, W, 3) uint8 RGB (or BGR, as OpenCV cameras give it) -> (B, 3, H, W) Y, Cr, Cb."""
    rgb = image.permute(0, 3, 1, 2).float().div_(255.0)
    return rgb_to_ycrcb(rgb.flip(1) if bgr else rgb)


def ycrcb_to_yuv420p(ycrcb: Tensor | YCrCbBatch) -> tuple[Tensor, Tensor, Tensor]:
    """Y, Cr, Cb in [0, 1] -> limited-range uint8 planes Y (B, H, W), U and V (B, ceil(H/2),
    ceil(W/2)). Full-resolution chroma is averaged over each 2x2 block (edges repeated);
    half-resolution chroma is used as it is, and a video's own limited-range chroma codes
    are passed through untouched."""
    batch = ycrcb if isinstance(ycrcb, YCrCbBatch) else YCrCbBatch.from_full(ycrcb)
    height, width = batch.y.shape[-2:]
    low, high = _LIMITED_Y
    y = batch.y[:, 0].clamp(0.0, 1.0).mul(high - low).add_(low).round_().to(torch.uint8)
    codes = batch.chroma_codes
    if codes is not None and batch.subsampled and not codes.full_range:
        return y, codes.codes[:, 1].contiguous(), codes.codes[:, 0].contiguous()
    crcb = batch.crcb
    if not batch.subsampled:
        crcb = F.avg_pool2d(F.pad(crcb, (0, width % 2, 0, height % 2), mode="replicate"), 2)
    low, high = _LIMITED_C
    crcb = crcb.clamp(0.0, 1.0).sub_(0.5).mul_(high - low).add_((low + high) / 2)
    as_u8 = lambda x: x.round_().to(torch.uint8)  # noqa: E731
    return y, as_u8(crcb[:, 1].contiguous()), as_u8(crcb[:, 0].contiguous())


def ycrcb_to_rgb_u8(ycrcb: Tensor | YCrCbBatch) -> Tensor:
    """Y, Cr, Cb -> (B, H, W, 3) RGB uint8, rounded (a batch by its own matrix, a tensor by BT.601)."""
    if isinstance(ycrcb, YCrCbBatch):
        rgb = ycrcb_to_rgb(ycrcb.full(), ycrcb.matrix).clamp_(0.0, 1.0)
    else:
        rgb = ycrcb_to_rgb(ycrcb).clamp_(0.0, 1.0)
    return rgb.mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


Upload = Callable[[list[np.ndarray]], Tensor]  # same-shaped host arrays -> one stacked tensor on the device


def _uint8_plane(planes: list[Planes], index: int, device: torch.device | str, upload: Upload | None) -> Tensor | list[Tensor]:
    """Plane ``index`` of each frame as uint8 on ``device``: one stacked (B, ...) tensor
    (uploaded by ``upload`` when given: e.g. through reusable pinned buffers), or on the
    host the decoder's own arrays, a tensor per frame (no copy)."""
    arrays = [p.data[index] for p in planes]
    if upload is not None:
        return upload(arrays)
    if torch.device(device).type == "cpu":
        return [torch.from_numpy(a) for a in arrays]
    stacked = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)  # one frame: a view, no copy
    return torch.from_numpy(stacked).to(device, non_blocking=True)


def _plane_into(planes: list[Planes], index: int, device: torch.device | str, upload: Upload | None, out: Tensor) -> None:
    """Plane ``index`` (0: luma, else chroma) of every frame into ``out`` (B, H, W) float.
    Host frames are converted a row at a time, each straight from the decoder's array while
    it is in cache; an upload is converted at once."""
    codes = _uint8_plane(planes, index, device, upload)
    limits = codes_range(index == 0, planes[0].full_range)  # one layout and range per call
    if isinstance(codes, list):
        for row, frame_codes in enumerate(codes):
            codes_to_unit(frame_codes, out[row], limits)
    else:
        codes_to_unit(codes, out, limits)


def planes_to_batch(planes: list[Planes], device: torch.device | str = "cpu", upload: Upload | None = None) -> YCrCbBatch:
    """Same-layout, same-size frames -> ``YCrCbBatch`` on ``device`` (uploaded as uint8,
    by ``upload`` when given: e.g. through reusable pinned buffers)."""
    first = planes[0]
    if first.layout == YUV420:
        y = torch.empty((len(planes), 1, *first.data[0].shape), device=device)
        return _yuv420_into(planes, device, upload, y)
    if first.layout == GRAY:
        return gray_batch(planes_to_luma(planes, device, upload))
    packed = _uint8_plane(planes, 0, device, upload)
    packed = torch.stack(packed) if isinstance(packed, list) else packed  # (B, H, W, 3)
    return YCrCbBatch.from_full(packed_to_ycrcb(packed, bgr=first.layout == BGR))


def planes_to_inputs(ir: list[Planes], visible: list[Planes], device: torch.device | str = "cpu", upload: Upload | None = None) -> tuple[Tensor, YCrCbBatch]:
    """A batch's infrared luma (B, 1, H, W) and visible ``YCrCbBatch`` on ``device``.

    For video (luma infrared, 4:2:0 visible) the two float tensors are views of one
    allocation (the chroma stays as codes: ``YCrCbBatch``). glibc hands big blocks back to
    the system once the free space they leave passes twice the largest block freed (its trim
    threshold follows that block), so separate buffers were mapped and faulted in again
    every batch: at batch 4, 640x512, 400 page faults and 0.8 ms of kernel time a frame.
    """
    if ir[0].layout not in (YUV420, GRAY) or visible[0].layout != YUV420:
        return planes_to_luma(ir, device, upload), planes_to_batch(visible, device, upload)
    b = len(ir)
    ir_out, y = _float_block(device, (b, 1, *ir[0].data[0].shape), (b, 1, *visible[0].data[0].shape))
    _plane_into(ir, 0, device, upload, ir_out[:, 0])
    return ir_out, _yuv420_into(visible, device, upload, y)


def _float_block(device: torch.device | str, *shapes: tuple[int, ...]) -> tuple[Tensor, ...]:
    """Contiguous float tensors of ``shapes``, all views of one allocation."""
    sizes = [math.prod(shape) for shape in shapes]
    block = torch.empty(sum(sizes), device=device)
    return tuple(part.view(shape) for part, shape in zip(block.split(sizes), shapes))


def _yuv420_into(planes: list[Planes], device: torch.device | str, upload: Upload | None, y: Tensor) -> YCrCbBatch:
    """4:2:0 frames: Y converted into ``y`` (B, 1, H, W), the chroma kept as codes."""
    _plane_into(planes, 0, device, upload, y[:, 0])
    return YCrCbBatch(y, ChromaCodes(_chroma_codes(planes, device, upload), planes[0].full_range), planes[0].matrix)


def _chroma_codes(planes: list[Planes], device: torch.device | str, upload: Upload | None) -> Tensor:
    """(B, 2, h, w) uint8: each frame's V (Cr) and U (Cb) plane."""
    v, u = _uint8_plane(planes, 2, device, upload), _uint8_plane(planes, 1, device, upload)
    if isinstance(v, list):  # host frames: one copy each into the batch (a quarter of a float pass)
        codes = torch.empty((len(planes), 2, *v[0].shape), dtype=torch.uint8)
        for row, (v_row, u_row) in enumerate(zip(v, u)):
            codes[row, 0].copy_(v_row)
            codes[row, 1].copy_(u_row)
        return codes
    return torch.stack([v, u], dim=1)


def planes_to_ycrcb(planes: list[Planes], device: torch.device | str = "cpu") -> Tensor:
    """Same-layout, same-size frames -> (B, 3, H, W) Y, Cr, Cb on ``device``."""
    return planes_to_batch(planes, device).full()


def planes_to_luma(planes: list[Planes], device: torch.device | str = "cpu", upload: Upload | None = None) -> Tensor:
    """Same-size frames -> (B, 1, H, W) luma in [0, 1] on ``device``; only Y is uploaded."""
    first = planes[0]
    if first.layout not in (YUV420, GRAY):
        return planes_to_batch(planes, device, upload).y
    out = torch.empty((len(planes), 1, *first.data[0].shape), device=device)
    _plane_into(planes, 0, device, upload, out[:, 0])
    return out


def planes_to_image(planes: Planes) -> np.ndarray:
    """One frame on the host, for consumers that need pixels: (H, W, 3) RGB uint8 for colour,
    (H, W) uint8 full-range luma for gray."""
    if planes.layout == GRAY:
        return (luma_to_unit(torch.from_numpy(planes.data[0])[None, None], planes.full_range) * 255.0).round_().to(torch.uint8)[0, 0].numpy()
    return ycrcb_to_rgb_u8(planes_to_batch([planes]))[0].numpy()
