"""Registration: warp one camera's image onto the other's pixel grid before fusing.

The calibration file (``calibration.fileformat``) gives a homography ``H`` from its
``source`` image to its ``destination`` image and both sizes. ``warp: ir_to_visible``
(default) resamples the IR image onto the visible frame, ``visible_to_ir`` the reverse;
with ``crop`` both are cut to the field of view the two cameras share.

Without a calibration file frames are used as they are when the sizes agree (identity,
said once in the log); when the sizes differ the moving image is only scaled to the
other's size, with a warning to calibrate.

The warp runs with OpenCV on the CPU, or batched with ``grid_sample`` on the GPU when the
fusion does (``warp_tensor``). Both use OpenCV's pixel convention: (0, 0) is the centre
of the top-left pixel; samples outside the moving image are black.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from calibration.fileformat import Registration
from calibration.imaging import coverage
from ldfusion.errors import DataError
from pipeline.frames import IR, VISIBLE, FramePair

log = logging.getLogger(__name__)

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

    @property
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
    covered = coverage(plan.moving_size, plan.matrix, plan.fixed_size)
    moving, fixed = ("IR", "visible") if plan.moving == IR else ("visible", "IR")
    if covered < MIN_COVERAGE:
        raise DataError(f"{source_name}: maps the {moving} image onto only {covered:.1%} of the {fixed} frame (off-screen?); check it with `ldfusion calibrate verify`")
    if covered < WARN_COVERAGE:
        log.warning("%s: the %s image covers only %.0f%% of the %s frame; the rest of the output is the %s image alone", source_name, moving, 100 * covered, fixed, fixed)


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
    """One stream's registration. The plan is made from the first pair's sizes."""

    def __init__(self, stream: str, registration: Registration | None, warp: str, crop: bool, calibration_path: Path | None = None):
        self.stream = stream
        self._registration = registration
        self._warp = warp
        self._crop = crop
        self._calibration_name = str(calibration_path) if calibration_path else "calibration"
        self.plan: WarpPlan | None = None
        self._grids: dict[torch.device, Tensor] = {}

    def check(self, ir: np.ndarray, visible: np.ndarray) -> WarpPlan:
        """Make the plan on the first call; afterwards, frames must keep their sizes."""
        ir_size, vi_size = (ir.shape[1], ir.shape[0]), (visible.shape[1], visible.shape[0])
        first = self.plan is None
        if self.plan is None:
            self.plan = self._make_plan(ir_size, vi_size)
        for what, got, expected in (("infrared", ir_size, self.plan.ir_size), ("visible", vi_size, self.plan.vi_size)):
            if got != expected:
                origin = f"the calibration file {self._calibration_name} is for" if self._registration else "the stream started with"
                raise DataError(f"stream {self.stream}: {what} frames are {_wxh(got)} but {origin} {_wxh(expected)}")
        if first and self._registration is not None:  # after the sizes: a wrong-size file is that error alone
            check_overlap(self.plan, self._calibration_name)
        return self.plan

    def _make_plan(self, ir_size: Size, vi_size: Size) -> WarpPlan:
        if self._registration is not None:
            plan = plan_from_calibration(self._registration, self._warp, self._crop, self._calibration_name)
            log.info("stream %s: %s from %s onto a %s grid%s", self.stream, "identity registration" if plan.is_identity else "registering",
                     self._calibration_name, _wxh(plan.output_size), " (cropped to the common field of view)" if plan.crop else "")
            return plan
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

    # --- CPU ------------------------------------------------------------------------------

    def apply_cpu(self, pair: FramePair) -> FramePair:
        plan = self.check(pair.ir, pair.visible)
        ir, visible = pair.ir, pair.visible
        if not plan.is_identity:
            if plan.moving == IR:
                ir = warp_image(ir, plan.matrix, plan.fixed_size, plan.affine)
            else:
                visible = warp_image(visible, plan.matrix, plan.fixed_size, plan.affine)
        if plan.crop:
            x, y, w, h = plan.crop
            ir, visible = ir[y : y + h, x : x + w], visible[y : y + h, x : x + w]
        return FramePair(pair.meta, np.ascontiguousarray(ir), np.ascontiguousarray(visible), registered=True)

    # --- GPU ------------------------------------------------------------------------------

    def warp_tensor(self, ir: Tensor, visible: Tensor) -> tuple[Tensor, Tensor]:
        """Warp a batch of this stream's (B, 1, h, w) IR and (B, 3, H, W) visible, float, on any device.

        ``check`` must have seen this stream's first pair (the pairing thread does it).
        """
        plan = self.plan
        assert plan is not None, "Registrar.check must run before warp_tensor"
        x, y, w, h = plan.crop or (0, 0, *plan.fixed_size)
        if plan.is_identity:
            return ir[..., y : y + h, x : x + w], visible[..., y : y + h, x : x + w]
        moving = ir if plan.moving == IR else visible
        grid = self._grid(moving.device).to(moving.dtype).expand(moving.shape[0], -1, -1, -1)
        # The grid covers only the crop, so the warped image comes out cropped.
        warped = F.grid_sample(moving, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if plan.moving == IR:
            return warped, visible[..., y : y + h, x : x + w]
        return ir[..., y : y + h, x : x + w], warped

    def _grid(self, device: torch.device) -> Tensor:
        if device not in self._grids:
            assert self.plan is not None
            self._grids[device] = sampling_grid(self.plan).to(device)
        return self._grids[device]


def warp_image(image: np.ndarray, matrix: np.ndarray, size: Size, affine: bool) -> np.ndarray:
    """OpenCV warp of an (H, W) or (H, W, 3) image onto a ``size`` (w, h) grid; outside is black."""
    if affine:
        return cv2.warpAffine(image, matrix[:2], size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.warpPerspective(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


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
