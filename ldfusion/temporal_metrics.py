"""Temporal stability of fused video: brightness flicker and flow-based warping error.

Both are computed on luma (Y) frames on the 0-255 scale, streamed one frame triple at a
time through ``TemporalMeter`` so a long clip never sits in memory.

**Flicker** is the fluctuation of the mean brightness from frame to frame. For a stream X
with mean luma ``m_X(t)``, ``flicker_X = mean over t >= 1 of |m_X(t) - m_X(t-1)|`` in grey
levels per frame, reported for the fused stream and for each source. What matters is the
flicker the fusion *adds*: ``flicker_excess = mean over t of
max(0, |dm_F(t)| - max(|dm_A(t)|, |dm_B(t)|))``, the part of the fused brightness change
that neither source shows. It is 0 for a static clip and for a fused stream whose brightness
follows a source; a fusion that pumps its brightness on a steady scene scores its full change.

**Warping error** (after Lai et al. 2018, "Learning blind video temporal consistency"): the
motion between frames t-1 and t is estimated on the *visible* stream with OpenCV's DIS
optical flow, both ways. The previous fused frame is warped onto the current one along the
backward flow, and ``warp_error_F = mean over t of mean over valid pixels of
|F(t) - warp(F(t-1))|`` in grey levels. A pixel is valid when its flow passes the
forward-backward consistency check (Sundaram et al. 2010:
``|w_b + w_f(x + w_b)|^2 <= 0.01 (|w_b|^2 + |w_f(x + w_b)|^2) + 0.5``) and lands inside the
previous frame, which masks occlusions and flow failures. The same warp applied to the
visible and infrared streams gives ``warp_error_vi`` (the floor set by the flow itself and
lighting changes) and ``warp_error_ir``; a temporally stable fusion stays near them.
``warp_valid`` is the mean fraction of pixels that passed the check (a frame pair where none
did, e.g. a cut, adds 0 to the warping errors and shows here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ldfusion.metrics import as_gray64

TEMPORAL_NAMES = (
    "flicker_fused",
    "flicker_ir",
    "flicker_vi",
    "flicker_excess",
    "warp_error_fused",
    "warp_error_ir",
    "warp_error_vi",
    "warp_valid",
)

# Forward-backward consistency thresholds (Sundaram et al. 2010, as used by Ruder et al. 2016).
_CONSISTENCY_RELATIVE = 0.01
_CONSISTENCY_ABSOLUTE = 0.5  # pixels^2


@dataclass(frozen=True)
class TemporalScores:
    frames: int
    flicker_fused: float
    flicker_ir: float
    flicker_vi: float
    flicker_excess: float
    warp_error_fused: float
    warp_error_ir: float
    warp_error_vi: float
    warp_valid: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class _Frame:
    fused: np.ndarray  # (H, W) float32, 0-255
    ir: np.ndarray
    vi: np.ndarray
    vi_u8: np.ndarray  # what the optical flow sees


class TemporalMeter:
    """Accumulates flicker and warping error over a stream of (fused, ir, vi) luma frames."""

    def __init__(self, flow_preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> None:
        self._flow = cv2.DISOpticalFlow_create(flow_preset)
        self._previous: _Frame | None = None
        self._frames = 0
        self._brightness_steps: list[tuple[float, float, float]] = []  # |dm| for fused, ir, vi
        self._warp_errors: list[tuple[float, float, float, float]] = []  # fused, ir, vi, valid fraction

    def update(self, fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> None:
        """Add the next frame triple: (H, W) luma on the 0-255 scale, all of one size."""
        frame = _as_frame(fused, ir, vi)
        previous = self._previous
        if previous is not None:
            if previous.fused.shape != frame.fused.shape:
                raise ValueError(f"frame size changed mid-stream: {previous.fused.shape} -> {frame.fused.shape}")
            self._brightness_steps.append(
                tuple(abs(float(now.mean()) - float(before.mean())) for now, before in _streams(frame, previous))
            )
            self._warp_errors.append(self._warp_error(previous, frame))
        self._previous = frame
        self._frames += 1

    def _warp_error(self, previous: _Frame, current: _Frame) -> tuple[float, float, float, float]:
        backward = self._flow.calc(current.vi_u8, previous.vi_u8, None)  # current pixel -> previous
        forward = self._flow.calc(previous.vi_u8, current.vi_u8, None)  # previous pixel -> current
        map_x, map_y, valid = consistent_backward_map(backward, forward)
        count = int(valid.sum())
        errors = []
        for now, before in _streams(current, previous):
            warped = cv2.remap(before, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            errors.append(float(np.abs(now - warped)[valid].mean()) if count else 0.0)
        return errors[0], errors[1], errors[2], count / valid.size

    def result(self) -> TemporalScores:
        """Scores so far; all zero for fewer than two frames."""
        steps = np.array(self._brightness_steps, dtype=np.float64).reshape(-1, 3)
        warps = np.array(self._warp_errors, dtype=np.float64).reshape(-1, 4)
        if not len(steps):
            return TemporalScores(self._frames, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
        excess = np.maximum(0.0, steps[:, 0] - steps[:, 1:].max(axis=1))
        flicker = steps.mean(axis=0)
        warp = warps.mean(axis=0)
        return TemporalScores(
            frames=self._frames,
            flicker_fused=float(flicker[0]),
            flicker_ir=float(flicker[1]),
            flicker_vi=float(flicker[2]),
            flicker_excess=float(excess.mean()),
            warp_error_fused=float(warp[0]),
            warp_error_ir=float(warp[1]),
            warp_error_vi=float(warp[2]),
            warp_valid=float(warp[3]),
        )


def temporal_metrics(fused_frames, ir_frames, vi_frames) -> TemporalScores:
    """Score whole sequences of (H, W) luma frames (0-255) of equal length."""
    fused_frames, ir_frames, vi_frames = list(fused_frames), list(ir_frames), list(vi_frames)
    if not len(fused_frames) == len(ir_frames) == len(vi_frames):
        raise ValueError(
            f"fused, ir and vi have different frame counts: {len(fused_frames)}, {len(ir_frames)}, {len(vi_frames)}"
        )
    meter = TemporalMeter()
    for fused, ir, vi in zip(fused_frames, ir_frames, vi_frames):
        meter.update(fused, ir, vi)
    return meter.result()


def consistent_backward_map(backward: np.ndarray, forward: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sampling maps for ``cv2.remap`` along the backward flow, and the mask of trusted pixels.

    ``backward``: (H, W, 2) flow from the current frame to the previous one; ``forward``:
    (H, W, 2) from the previous to the current. Returns map_x, map_y (float32, (H, W)) and
    a boolean (H, W) mask: consistent both ways and landing inside the previous frame.
    """
    height, width = backward.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x = grid_x + backward[..., 0]
    map_y = grid_y + backward[..., 1]
    forward_there = cv2.remap(forward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # (H, W, 2)
    round_trip = np.square(backward + forward_there).sum(axis=2)
    magnitude = np.square(backward).sum(axis=2) + np.square(forward_there).sum(axis=2)
    consistent = round_trip <= _CONSISTENCY_RELATIVE * magnitude + _CONSISTENCY_ABSOLUTE
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return map_x, map_y, consistent & inside


def _as_frame(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> _Frame:
    f, a, b = (as_gray64(x, name).astype(np.float32) for x, name in ((fused, "fused"), (ir, "ir"), (vi, "vi")))
    if not f.shape == a.shape == b.shape:
        raise ValueError(f"fused, ir and vi differ in size: {f.shape}, {a.shape}, {b.shape}")
    vi_u8 = np.clip(np.rint(b), 0, 255).astype(np.uint8)
    return _Frame(f, a, b, vi_u8)


def _streams(now: _Frame, before: _Frame):
    """(current, previous) pairs in the order fused, ir, vi."""
    return ((now.fused, before.fused), (now.ir, before.ir), (now.vi, before.vi))
