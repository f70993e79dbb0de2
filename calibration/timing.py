"""The constant delay between the infrared and visible streams of a recorded pair.

Whatever moves in the scene changes both videos at the same moments, whichever modality
shows it. So each video becomes a motion-energy signal (mean absolute difference of
successive small gray frames, log-compressed and with its slow trend removed), both are
resampled onto one time grid, and the lag of the best normalised cross-correlation,
refined to sub-sample precision, is the offset.

Sign convention (as in the registration file): ``time_offset_s`` is added to infrared
timestamps to put them on the visible clock. If the infrared camera's clock runs 0.2 s
behind (an event stamped 10.0 s in the visible video is stamped 9.8 s in the infrared one),
the offset is +0.2 s.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from calibration.fileformat import CalibrationError
from ldfusion.color import planes_to_image
from ldfusion.video import VideoReader
from calibration.imaging import Size

log = logging.getLogger(__name__)

ANALYSIS_WIDTH = 96  # motion energy needs no detail; small frames decode and diff fast
MIN_FRAMES = 8
WEAK_PEAK = 0.3  # a correlation peak below this is a guess: warn
TREND_SECONDS = 2.0  # slow changes (auto-exposure, clouds) are removed over this window


@dataclass(frozen=True)
class MotionSignal:
    times: np.ndarray  # (N,) seconds: midpoints between the two frames each difference spans
    energy: np.ndarray  # (N,) mean absolute difference of successive frames, gray levels
    fps: float
    size: Size  # the video's (width, height)


@dataclass(frozen=True)
class OffsetResult:
    offset_s: float  # add to infrared timestamps to get visible timestamps
    peak: float  # normalised correlation at the offset, in [-1, 1]
    ir_fps: float
    vi_fps: float

    @property
    def offset_vi_frames(self) -> float:
        return self.offset_s * self.vi_fps

    @property
    def offset_ir_frames(self) -> float:
        return self.offset_s * self.ir_fps


def video_size(path: str | os.PathLike) -> Size:
    """(width, height) of a video's first stream, without decoding it."""
    with VideoReader(path) as reader:
        return int(reader.width), int(reader.height)


def motion_energy(
    path: str | os.PathLike,
    max_seconds: float | None = None,
    width: int = ANALYSIS_WIDTH,
    progress: str | None = None,
) -> MotionSignal:
    """Decode a video (PyAV) and measure how much each frame differs from the previous one.

    ``progress``: a label for a progress bar while decoding (no bar when None).
    """
    path = Path(path)
    with VideoReader(path, luma_only=True) as reader:
        return _motion_energy(reader, path, max_seconds, width, progress)


def _motion_energy(reader: VideoReader, path: Path, max_seconds: float | None, width: int, progress: str | None) -> MotionSignal:
    fps = float(reader.rate) if reader.rate_stated else 0.0
    size = (reader.width, reader.height)
    height = max(2, round(width * size[1] / max(size[0], 1)) // 2 * 2)
    times, energies, previous, previous_time = [], [], None, None
    frames = tqdm(reader, total=reader.declared_frames, unit="frame", desc=progress, disable=progress is None)
    for frame in frames:
        time = frame.t
        if max_seconds is not None and times and time - times[0] > max_seconds:
            break
        gray = cv2.resize(planes_to_image(frame.planes), (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
        gray = cv2.GaussianBlur(gray, (0, 0), 1.0)  # compression noise is not motion
        if previous is not None:
            energies.append(float(np.mean(np.abs(gray - previous))))
            times.append(0.5 * (time + previous_time))
        previous, previous_time = gray, time
    if len(energies) < MIN_FRAMES:
        raise CalibrationError(f"{path}: only {len(energies) + 1} frame(s) decoded; need at least {MIN_FRAMES + 1}")
    if not fps:
        fps = (len(times) - 1) / max(times[-1] - times[0], 1e-9)
    return MotionSignal(np.array(times), np.array(energies), fps, size)


def estimate_offset(ir: MotionSignal, vi: MotionSignal, max_offset_s: float | None = None) -> OffsetResult:
    """The lag that best lines the infrared motion up with the visible motion."""
    rate = 2.0 * max(ir.fps, vi.fps)  # finer than either stream: lags between frames count
    ir_duration, vi_duration = ir.times[-1] - ir.times[0], vi.times[-1] - vi.times[0]
    if max_offset_s is None:
        max_offset_s = min(10.0, 0.5 * min(ir_duration, vi_duration))
    if max_offset_s <= 0:
        raise CalibrationError(f"the maximum offset must be positive; got {max_offset_s}")
    ir_signal = _prepare(ir, rate)
    vi_signal = _prepare(vi, rate)
    # ir(t) ~ vi(t + offset). Infrared sample k (at ir_t0 + k/rate) meets visible sample
    # k + shift, so offset = shift / rate + (vi_t0 - ir_t0).
    start_difference = vi.times[0] - ir.times[0]
    shifts = np.arange(
        math.floor((-max_offset_s - start_difference) * rate), math.ceil((max_offset_s - start_difference) * rate) + 1
    )
    min_overlap = max(MIN_FRAMES, int(0.25 * min(len(ir_signal), len(vi_signal))))
    scores = np.array([_correlation_at(ir_signal, vi_signal, int(shift), min_overlap) for shift in shifts])
    if not np.any(np.isfinite(scores)):
        raise CalibrationError("the two videos do not overlap enough in time to compare their motion")
    best = int(np.nanargmax(scores))
    offset = float(shifts[best] + _parabolic_peak(scores, best)) / rate + start_difference
    peak = float(scores[best])
    if peak < WEAK_PEAK:
        log.warning("motion correlation peak is only %.2f: the offset is unreliable (too little shared motion?)", peak)
    return OffsetResult(offset, peak, ir.fps, vi.fps)


def _prepare(signal: MotionSignal, rate: float) -> np.ndarray:
    """Resample to ``rate`` Hz on the signal's own time base, compress, detrend, standardise."""
    grid = np.arange(signal.times[0], signal.times[-1] + 0.5 / rate, 1.0 / rate)
    values = np.log1p(np.interp(grid, signal.times, signal.energy))
    trend_samples = max(3, int(TREND_SECONDS * rate) | 1)
    if len(values) > trend_samples:
        kernel = np.ones(trend_samples) / trend_samples
        padded = np.pad(values, trend_samples // 2, mode="edge")
        values = values - np.convolve(padded, kernel, mode="valid")
    spread = float(values.std())
    if spread < 1e-6:
        raise CalibrationError("one of the videos shows no motion; the offset needs something moving in view")
    return (values - values.mean()) / spread


def _correlation_at(ir: np.ndarray, vi: np.ndarray, shift: int, min_overlap: int) -> float:
    """Pearson correlation of ir[k] with vi[k + shift] over their overlap."""
    first = max(0, -shift)
    last = min(len(ir), len(vi) - shift)
    if last - first < min_overlap:
        return float("nan")
    a, b = ir[first:last], vi[first + shift : last + shift]
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return float(np.dot(a, b) / denominator) if denominator > 0 else float("nan")


def _parabolic_peak(scores: np.ndarray, index: int) -> float:
    """Sub-sample position of the peak from a parabola through it and its neighbours."""
    if index == 0 or index == len(scores) - 1 or not np.all(np.isfinite(scores[index - 1 : index + 2])):
        return 0.0
    left, centre, right = scores[index - 1 : index + 2]
    curvature = left - 2 * centre + right
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0
