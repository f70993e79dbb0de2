"""Registration: warp one camera's image onto the other's pixel grid before fusing.

The calibration file (``calibration.fileformat``) gives a homography ``H`` from its
``source`` image to its ``destination`` image and both sizes. ``warp: ir_to_visible``
(default) resamples the IR image onto the visible frame, ``visible_to_ir`` the reverse;
with ``crop`` both are cut to the field of view the two cameras share.

Without a calibration file frames are used as they are when the sizes agree (identity,
said once in the log); when the sizes differ the moving image is only scaled to the
other's size, with a warning to calibrate.

``Registrar`` owns one stream's registration. Where it runs is decided once, at start:
on the fusion device, batched with ``grid_sample``, next to the network, on whatever device
that is. Frames arrive there as planes, and warping them anywhere else would mean
converting them on the host first. Its plan is made at start from the calibration file's
sizes, or, without a file, from the first pair's sizes. It has one call for each side:
``check`` in the pairing thread (sizes, before a pair is queued) and ``apply`` in the
fusion worker (the warp and crop of a batch of tensors).

Convention: OpenCV's pixel grid: (0, 0) is the centre of the top-left pixel; samples
outside the moving image are black (for colour: Y 0, neutral chroma).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import threading

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from calibration.fileformat import Registration
from ldfusion.color import YCrCbBatch
from ldfusion.errors import DataError
from pipeline.frames import IR, VISIBLE

log = logging.getLogger(__name__)


class FrameSizeError(DataError):
    """A pair whose frames have other sizes than the stream's (or the calibration file's)."""


# A calibration whose moving image covers less of the fixed frame than this would give the
# fixed image alone (exit 0, nothing fused): refused. No co-mounted rig overlaps that little.
MIN_COVERAGE = 0.05
WARN_COVERAGE = 0.5  # below this the run goes on, with a warning that most of the output is one camera

Size = tuple[int, int]  # (width, height)


@dataclass(frozen=True)
class WarpPlan:
    """How one stream's frames are brought onto one grid."""

    moving: str  # IR or VISIBLE: the image that is resampled
    matrix: np.ndarray  # (3, 3) moving pixel -> fixed pixel
    ir_size: Size  # expected frame sizes
    vi_size: Size
    crop: tuple[int, int, int, int] | None  # (x, y, w, h) in the fixed frame
    affine: bool

    @property
    def fixed_size(self) -> Size:
        return self.vi_size if self.moving == IR else self.ir_size

    @property
    def moving_size(self) -> Size:
        return self.ir_size if self.moving == IR else self.vi_size

    @property
    def output_size(self) -> Size:
        return (self.crop[2], self.crop[3]) if self.crop else self.fixed_size

    @cached_property  # asked for every batch; np.allclose costs tens of microseconds
    def is_identity(self) -> bool:
        return self.ir_size == self.vi_size and np.allclose(self.matrix, np.eye(3), atol=1e-9)


def plan_from_calibration(registration: Registration, warp: str, crop: bool, source_name: str = "calibration") -> WarpPlan:
    """Turn a calibration file's H (source -> destination) into the requested warp."""
    ir_to_vi = registration.H if registration.source == "ir" else np.linalg.inv(registration.H)
    ir_size, vi_size = registration.source_size, registration.destination_size
    if registration.source != "ir":
        ir_size, vi_size = vi_size, ir_size
    moving = IR if warp == "ir_to_visible" else VISIBLE
    matrix = ir_to_vi if moving == IR else np.linalg.inv(ir_to_vi)
    plan = WarpPlan(moving, matrix / matrix[2, 2], ir_size, vi_size, None, registration.model == "affine")
    if not crop:
        return plan
    file_crop_applies = registration.crop is not None and (registration.source == "ir") == (moving == IR)
    box = registration.crop if file_crop_applies else common_field_of_view(plan, source_name)
    return replace(plan, crop=box)


def check_overlap(plan: WarpPlan, source_name: str) -> None:
    """Refuse a plan whose moving image (nearly) misses the fixed frame; warn when it covers little of it."""
    covered = coverage(plan)
    moving, fixed = ("IR", "visible") if plan.moving == IR else ("visible", "IR")
    if covered < MIN_COVERAGE:
        raise DataError(f"{source_name}: maps the {moving} image onto only {covered:.1%} of the {fixed} frame (off-screen?); check it with `ldfusion calibrate verify`")
    if covered < WARN_COVERAGE:
        log.warning("%s: the %s image covers only %.0f%% of the %s frame; the rest of the output is the %s image alone", source_name, moving, 100 * covered, fixed, fixed)


def coverage(plan: WarpPlan) -> float:
    """Share of the fixed frame's pixels that sample inside the moving image, by the grid the
    warp itself uses: a point behind the camera covers nothing. (OpenCV's warp, which this
    used, ignores that side, so a map across the horizon counted 27 % and warped nothing.)"""
    grid = sampling_grid(replace(plan, crop=None))
    return float(torch.all(grid.abs() <= 1.0, dim=-1).float().mean())


def plan_without_calibration(ir_size: Size, vi_size: Size, warp: str, crop: bool) -> WarpPlan:
    """Identity when the sizes agree, else a plain scale of the moving image."""
    sx, sy = vi_size[0] / ir_size[0], vi_size[1] / ir_size[1]
    # Pixel centres: x_vi + 0.5 = (x_ir + 0.5) * sx.
    ir_to_vi = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    moving = IR if warp == "ir_to_visible" else VISIBLE
    matrix = ir_to_vi if moving == IR else np.linalg.inv(ir_to_vi)
    plan = WarpPlan(moving, matrix, ir_size, vi_size, None, affine=True)
    return replace(plan, crop=common_field_of_view(plan, "scaling")) if crop else plan


def common_field_of_view(plan: WarpPlan, source_name: str) -> tuple[int, int, int, int]:
    """The axis-aligned box of fixed-frame pixels that the warped moving image covers.

    The box is bounded by the inner edges of the warped image's corners, which is exact for
    scales and translations and close for the near-rectangular homographies of co-mounted
    cameras.
    """
    w, h = plan.moving_size
    corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [w - 0.5, h - 0.5, 1], [-0.5, h - 0.5, 1]]).T
    mapped = plan.matrix @ corners
    x, y = mapped[0] / mapped[2], mapped[1] / mapped[2]  # TL, TR, BR, BL
    fw, fh = plan.fixed_size
    left, right = max(x[0], x[3], -0.5), min(x[1], x[2], fw - 0.5)
    top, bottom = max(y[0], y[1], -0.5), min(y[2], y[3], fh - 0.5)
    first_x, last_x = math.ceil(left + 0.5 - 1e-6), math.floor(right - 0.5 + 1e-6)
    first_y, last_y = math.ceil(top + 0.5 - 1e-6), math.floor(bottom - 0.5 + 1e-6)
    if last_x < first_x or last_y < first_y:
        raise DataError(f"{source_name}: the two cameras share no field of view; cannot crop")
    return first_x, first_y, last_x - first_x + 1, last_y - first_y + 1


class Registrar:
    """One stream's registration on ``device``: ``check`` on the pairing side, ``apply`` on the device side."""

    def __init__(
        self, stream: str, registration: Registration | None, warp: str, crop: bool,
        calibration_path: Path | None = None, device: torch.device | str = "cpu",
    ):
        self.stream = stream
        self.device = torch.device(device)
        self._registration = registration
        self._warp = warp
        self._crop = crop
        self._calibration_name = str(calibration_path) if calibration_path else "calibration"
        self._lock = threading.Lock()  # the two sides may make the plan at once
        self.plan: WarpPlan | None = None
        self._overlap_checked = False
        self._grid: Tensor | None = None
        if registration is not None:  # the file gives the sizes: everything is ready at start
            self._set_plan(self._plan_from_file())

    def check(self, ir_size: Size, vi_size: Size) -> WarpPlan:
        """Pairing side: the plan (made from these sizes when there is no calibration file);
        frames that do not have the plan's sizes are a ``DataError``."""
        plan = self.plan or self._first_plan(ir_size, vi_size)
        for what, got, expected in (("infrared", ir_size, plan.ir_size), ("visible", vi_size, plan.vi_size)):
            if got != expected:
                origin = f"the calibration file {self._calibration_name} is for" if self._registration else "the stream started with"
                raise FrameSizeError(f"stream {self.stream}: {what} frames are {_wxh(got)} but {origin} {_wxh(expected)}")
        if not self._overlap_checked and self._registration is not None:
            # After the sizes, so a calibration file for another camera is that one error alone.
            check_overlap(plan, self._calibration_name)
            self._overlap_checked = True  # both sides may check at once: at worst it is checked twice
        return plan

    def expected_output_size(self, ir_size: Size | None, vi_size: Size | None) -> Size | None:
        """The fused frames' size before the first pair, without fixing the plan (the first
        pair still does): what the run readies the network and the encoders for. A calibration
        file decides it; without one, the cameras' stated sizes do (None when one is unknown)."""
        if self.plan is not None:
            return self.plan.output_size
        if ir_size is None or vi_size is None:
            return None
        return plan_without_calibration(ir_size, vi_size, self._warp, self._crop).output_size

    def apply(self, ir: Tensor, visible: YCrCbBatch) -> tuple[Tensor, YCrCbBatch]:
        """Device side: warp and crop a batch of (B, 1, h, w) IR and visible Y, Cr, Cb."""
        plan = self.check((ir.shape[-1], ir.shape[-2]), (visible.y.shape[-1], visible.y.shape[-2]))
        x, y, w, h = plan.crop or (0, 0, *plan.fixed_size)
        if plan.is_identity:
            return ir[..., y : y + h, x : x + w], visible.crop(x, y, w, h)
        moving = ir if plan.moving == IR else visible.y
        grid = self._grid_on(moving.device).to(moving.dtype).expand(moving.shape[0], -1, -1, -1)
        if plan.moving == IR:  # the grid covers only the crop, so the warped image comes out cropped
            return F.grid_sample(ir, grid, mode="bilinear", padding_mode="zeros", align_corners=False), visible.crop(x, y, w, h)
        # Black outside the visible image: Y 0 and neutral chroma (0.5), not zero chroma (green).
        neutral = _NEUTRAL.to(visible.y)
        warped = F.grid_sample(visible.full() - neutral, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + neutral
        return ir[..., y : y + h, x : x + w], YCrCbBatch.from_full(warped, visible.matrix)

    def _first_plan(self, ir_size: Size, vi_size: Size) -> WarpPlan:
        with self._lock:
            if self.plan is None:
                self._set_plan(self._plan_without_file(ir_size, vi_size))
            return self.plan

    def _set_plan(self, plan: WarpPlan) -> None:
        self._grid = None if plan.is_identity else sampling_grid(plan).to(self.device)
        self.plan = plan

    def _grid_on(self, device: torch.device) -> Tensor:
        assert self._grid is not None  # made with the plan, for every plan that warps
        return self._grid if self._grid.device == device else self._grid.to(device)

    def _plan_from_file(self) -> WarpPlan:
        assert self._registration is not None
        plan = plan_from_calibration(self._registration, self._warp, self._crop, self._calibration_name)
        log.info("stream %s: %s from %s onto a %s grid on %s%s", self.stream, "identity registration" if plan.is_identity else "registering",
                 self._calibration_name, _wxh(plan.output_size), self.device, " (cropped to the common field of view)" if plan.crop else "")
        return plan

    def _plan_without_file(self, ir_size: Size, vi_size: Size) -> WarpPlan:
        plan = plan_without_calibration(ir_size, vi_size, self._warp, self._crop)
        if ir_size == vi_size:
            log.info("stream %s: no calibration file; IR and visible frames are used as they are (identity registration)", self.stream)
        else:
            log.warning(
                "stream %s: no calibration file and the frames differ in size (IR %s, visible %s); "
                "%s is only scaled to fit; run `ldfusion calibrate` for a true registration",
                self.stream, _wxh(ir_size), _wxh(vi_size), "IR" if plan.moving == IR else "visible",
            )
        return plan


_NEUTRAL = torch.tensor([0.0, 0.5, 0.5]).view(1, 3, 1, 1)  # black in Y, Cr, Cb


def sampling_grid(plan: WarpPlan) -> Tensor:
    """(1, h, w, 2) grid for ``grid_sample``: where each output pixel samples the moving image."""
    x0, y0, w, h = plan.crop or (0, 0, *plan.fixed_size)
    ys, xs = np.meshgrid(np.arange(y0, y0 + h, dtype=np.float64), np.arange(x0, x0 + w, dtype=np.float64), indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])  # (3, N) output pixels
    source = np.linalg.inv(plan.matrix) @ points
    behind = source[2] <= 1e-12  # perspective points behind the camera: sample nothing
    sx = source[0] / np.where(behind, 1.0, source[2])
    sy = source[1] / np.where(behind, 1.0, source[2])
    mw, mh = plan.moving_size
    # align_corners=False: pixel i's centre is at normalised (2i + 1) / size - 1.
    grid = np.stack([(2 * sx + 1) / mw - 1, (2 * sy + 1) / mh - 1], axis=-1)
    grid[behind] = -2.0
    return torch.from_numpy(grid.reshape(1, h, w, 2).astype(np.float32))


def _wxh(size: Size) -> str:
    return f"{size[0]}x{size[1]}"
