"""The constant delay between the infrared and visible streams of a recorded pair.

Whatever moves in the scene changes both videos at the same moments, whichever modality
shows it. So each video becomes a motion-energy signal (mean absolute difference of
successive small gray frames, per cell of a 2x2 grid and over the whole frame,
log-compressed and with its slow trend removed), both are resampled onto one time grid, and
the lag of the best normalised cross-correlation (averaged over the cells), refined to
sub-sample precision, is the offset. Its confidence is the share of time windows that, matched
on their own, find the same lag.

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
MIN_CONFIDENCE = 0.5  # below this the offset is a guess: `calibrate offset` refuses it (unless --force)
PEAK_EXCLUSION_S = 0.15  # the sidelobes of the correlation start this far from the peak
SIDELOBE_SECONDS = 3.0  # the correlation is evaluated over at least this many seconds of lag each way
REGIONS = (2, 2)  # rows, columns of the per-region motion signals
WHITEN = False
SEGMENTS = 6  # time windows matched on their own for the confidence
SEGMENT_FRACTION = 0.4  # of the signal, each
AGREEMENT_S = 0.05  # window lags within this of the overall one agree
TREND_SECONDS = 2.0  # slow changes (auto-exposure, clouds) are removed over this window
REPEAT_FRACTION = 0.25  # repeats change a frame by under this share of what new frames change (medians)
HELD_SHARE = 0.3  # a video that holds frames repeats at least this share (a 20 Hz camera sent at 30 fps: a third)
HELD_RUN = 6  # the longest run of repeats taken out (a 9 Hz camera sent at 60 fps repeats each frame 5-6 times)
# Two clips that share less than this share of the shorter one's time give no frame pairs for
# scene registration: the offset or the files are wrong (a recording started late overlaps more).
MIN_OVERLAP_SHARE = 0.1


@dataclass(frozen=True)
class MotionSignal:
    times: np.ndarray  # (N,) seconds: midpoints between the two frames each difference spans
    energy: np.ndarray  # (N, regions) mean absolute difference of successive frames per region, gray levels
    fps: float
    size: Size  # the video's (width, height)


@dataclass(frozen=True)
class OffsetResult:
    offset_s: float  # add to infrared timestamps to get visible timestamps
    peak: float  # normalised correlation at the offset, in [-1, 1]
    ir_fps: float
    vi_fps: float
    peak_to_sidelobe: float = float("nan")  # (peak - sidelobe mean) / sidelobe std of the correlation
    confidence: float = 0.0  # share of time segments that agree, in [0, 1]; trust from MIN_CONFIDENCE up
    segments_agreeing: int = 0
    segments: int = 0
    beyond_range: bool = False  # a match beyond max_offset_s is backed by more windows (confidence 0)

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
    if max_seconds is not None and not 0 < max_seconds < math.inf:
        raise CalibrationError(f"the analysed duration must be a positive number of seconds; got {max_seconds}")
    with VideoReader(path, luma_only=True) as reader:
        return _motion_energy(reader, path, max_seconds, width, progress)


def _motion_energy(reader: VideoReader, path: Path, max_seconds: float | None, width: int, progress: str | None) -> MotionSignal:
    fps = float(reader.rate) if reader.rate_stated else 0.0
    size = (reader.width, reader.height)
    frame_times, energies, keys, previous = [], [], [], None
    for time, gray, key in _gray_frames(reader, width, progress):
        if max_seconds is not None and frame_times and time - frame_times[0] > max_seconds:
            break
        gray = cv2.GaussianBlur(gray, (0, 0), 1.0)  # compression noise is not motion
        if previous is not None:
            energies.append(region_energy(np.abs(gray - previous)))
            keys.append(key)
        previous = gray
        frame_times.append(time)
    if len(energies) < MIN_FRAMES:
        within = f" in the first {max_seconds:g} s" if max_seconds is not None else ""  # the cap, not the video, may be short
        raise CalibrationError(f"{path}: only {len(energies) + 1} frame(s) decoded{within}; need at least {MIN_FRAMES + 1}")
    if not fps:
        fps = (len(frame_times) - 1) / max(frame_times[-1] - frame_times[0], 1e-9)
    times, energy = _changes(np.array(frame_times), np.array(energies), np.array(keys, bool), path)
    return MotionSignal(times, energy, fps, size)


def _changes(frame_times: np.ndarray, energies: np.ndarray, keys: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Each frame-to-frame change at the midpoint of the two frames' times, per frame period.

    Many thermal cameras make fewer frames than they send (a 9 Hz core at 30 fps): each
    sensor frame is repeated until the next, so the difference is nothing on the repeats
    and all the motion of several periods on the new frame. Such a spiky signal matched the
    visible camera's smooth one badly (M3SVD infrared held at 9 or 12 Hz and sent at 30 or
    60 fps: 1.5-36 frames off at confidences 0.17-0.5). In a video that holds frames, a short run of
    repeats is taken out: the change to the next new frame spans the run, is placed at its
    middle, and is divided by its length in frame periods. Long runs are a still scene.
    """
    midpoints = 0.5 * (frame_times[1:] + frame_times[:-1])
    whole = energies[:, -1]
    repeats = _repeats(whole)
    runs = _runs(repeats)
    if not _holds_frames(repeats, runs) or _encoder_rhythm(repeats, keys):
        return midpoints, energies
    keep = np.ones(len(whole), bool)
    since = np.arange(len(whole))  # the frame each change starts from: the one before, unless it repeats an older one
    for first, length in runs:
        if length <= HELD_RUN and first + length < len(whole):
            keep[first : first + length] = False
            since[first + length] = first
    log.warning("%s looks like a camera that holds frames (%d of %d repeat the one before, at a steady cadence): "
                "the repeats are left out of its motion signal", path, int((~keep).sum()), len(whole))
    start_times, end_times = frame_times[since[keep]], frame_times[1:][keep]
    periods = np.maximum((end_times - start_times) / np.median(np.diff(frame_times)), 1.0)
    return 0.5 * (start_times + end_times), energies[keep] / periods[:, None]


def _holds_frames(repeats: np.ndarray, runs: list[tuple[int, int]]) -> bool:
    """A camera that holds frames repeats them often, a few at a time, at a steady cadence
    (9 Hz at 30 fps: a new frame every 3 or 4). A scene that stops moving now and then (or a
    rendered clip's still frames) has no such rhythm."""
    if repeats.mean() < HELD_SHARE or len(runs) < MIN_FRAMES or np.median([length for _, length in runs]) > HELD_RUN:
        return False
    cadence = np.diff([first for first, _ in runs])
    return bool(np.mean(np.abs(cadence - np.median(cadence)) <= 1) >= 0.8)


def _encoder_rhythm(repeats: np.ndarray, keys: np.ndarray) -> bool:
    """Whether the frames that change much are the encoder's keyframes: a short keyframe
    interval at a low bitrate (every 3rd frame a keyframe, crf 35) left the frames between
    them changed little, and a steady video was taken for a held one (27 frames off). In
    MJPEG every frame is a keyframe, repeats too, so that does not count."""
    new_frames = ~repeats
    return bool(keys[new_frames].mean() >= 0.5 and keys[repeats].mean() <= 0.1) if repeats.any() and new_frames.any() else False


def _repeats(changes: np.ndarray) -> np.ndarray:
    """Which frames repeat the one before: the changes far below the others.

    An encoder does not reproduce a repeat exactly (its changes are 2-30 % of a new frame's),
    so the changes are split in two groups by their logarithm (Otsu's threshold), and the
    lower group counts as repeats when its median is under REPEAT_FRACTION of the upper's.
    """
    # Measured from a floor of 5 % of the large changes: an exact repeat (0) and one the
    # encoder left 10 % of a change in belong together, not at opposite ends of a log scale.
    logs = np.log(changes + 0.05 * max(float(np.percentile(changes, 90)), 1e-6))
    # Bursts above the 90th percentile (a camera's own frame drops, a flash) would make a
    # third group that the split falls between; they count with the new frames.
    order = np.sort(np.minimum(logs, np.percentile(logs, 90)))
    below = np.arange(1, len(order))  # split after each sorted value
    mean_low = np.cumsum(order)[:-1] / below
    mean_high = (order.sum() - np.cumsum(order)[:-1]) / (len(order) - below)
    split = int(np.argmax(below * (len(order) - below) * (mean_high - mean_low) ** 2))
    threshold = 0.5 * (order[split] + order[split + 1])
    low, high = order[order <= threshold], order[order > threshold]
    if not len(low) or not len(high) or np.median(high) - np.median(low) < math.log(1.0 / REPEAT_FRACTION):
        return np.zeros(len(changes), bool)
    return logs <= threshold


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(first index, length) of each run of True in ``flags``."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a), int(b - a)) for a, b in zip(starts, ends)]


def _gray_frames(reader: VideoReader, width: int, progress: str | None):
    """(time s, (h, width) float32 gray frame, keyframe) for every decoded frame, in order."""
    height = max(2, round(width * reader.height / max(reader.width, 1)) // 2 * 2)
    frames = tqdm(reader, total=reader.expected_frames, unit="frame", desc=progress, disable=progress is None)
    for frame in frames:
        gray = cv2.resize(planes_to_image(frame.planes), (width, height), interpolation=cv2.INTER_AREA)
        yield frame.t, gray.astype(np.float32), frame.key


def region_energy(difference: np.ndarray) -> np.ndarray:
    """Mean absolute frame difference in each cell of a REGIONS grid and over the whole frame, (rows * cols + 1,).

    One moving car changes a few cells a lot and the frame mean a little; per-cell signals
    keep it visible, and cells of the two (roughly registered) videos are compared one by one.
    The whole-frame signal, last, does not depend on the registration at all.
    """
    rows, cols = REGIONS
    height, width = difference.shape
    cells = difference[: height // rows * rows, : width // cols * cols].reshape(rows, height // rows, cols, width // cols)
    return np.append(cells.mean(axis=(1, 3)).reshape(-1), difference.mean())


def estimate_offset(ir: MotionSignal, vi: MotionSignal, max_offset_s: float | None = None) -> OffsetResult:
    """The lag that best lines the infrared motion up with the visible motion, and how sure it is.

    The correlation is computed per region and averaged over the regions that move in both
    videos; it is evaluated over at least SIDELOBE_SECONDS of lags either way, so that the
    peak-to-sidelobe ratio sees rival peaks, including ones beyond ``max_offset_s`` (then the
    peak within the range is not the best one, and the confidence drops).
    """
    rate = 2.0 * max(ir.fps, vi.fps)  # finer than either stream: lags between frames count
    ir_duration, vi_duration = ir.times[-1] - ir.times[0], vi.times[-1] - vi.times[0]
    if max_offset_s is None:
        max_offset_s = min(10.0, 0.5 * min(ir_duration, vi_duration))
    if not 0 < max_offset_s < math.inf:  # NaN and inf would pass `<= 0` and break the lag grid
        raise CalibrationError(f"the maximum offset must be a positive number of seconds; got {max_offset_s}")
    ir, vi = _alike_in_time(ir, vi)
    ir_signal, vi_signal = _matched_regions(_prepare(ir, rate), _prepare(vi, rate))
    # ir(t) ~ vi(t + offset). Infrared sample k (at ir_t0 + k/rate) meets visible sample
    # k + shift, so offset = shift / rate + (vi_t0 - ir_t0).
    start_difference = vi.times[0] - ir.times[0]
    wide = max(max_offset_s, min(SIDELOBE_SECONDS, 0.5 * min(ir_duration, vi_duration)))
    shifts = np.arange(math.floor((-wide - start_difference) * rate), math.ceil((wide - start_difference) * rate) + 1)
    min_overlap = max(MIN_FRAMES, int(0.25 * min(len(ir_signal), len(vi_signal))))
    scores = np.array([_correlation_at(ir_signal, vi_signal, int(shift), min_overlap) for shift in shifts])
    in_range = np.abs(shifts / rate + start_difference) <= max_offset_s + 0.5 / rate
    if not np.any(np.isfinite(scores[in_range])):
        raise CalibrationError("the two videos do not overlap enough in time to compare their motion")
    best = int(np.nanargmax(np.where(in_range, scores, -np.inf)))
    offset = float(shifts[best] + _parabolic_peak(scores, best)) / rate + start_difference
    # The lag grid is 1/rate apart: the nearest lag to the range's end may lie half a step beyond
    # it, and the sub-sample peak half a step more; the answer stays within the range asked for.
    offset = float(np.clip(offset, -max_offset_s, max_offset_s))
    peak = float(scores[best])
    psr = peak_to_sidelobe(scores, best, int(round(PEAK_EXCLUSION_S * rate)))
    window_lags = _window_lags(ir_signal, vi_signal, shifts)
    tolerance = max(1, int(round(AGREEMENT_S * rate)))
    agreeing, segments = int(np.sum(np.abs(window_lags - shifts[best]) <= tolerance)), SEGMENTS
    # A match beyond --max-offset that more windows back than the chosen one: the range is wrong.
    rival = int(np.nanargmax(scores))
    rival_support = int(np.sum(np.abs(window_lags - shifts[rival]) <= tolerance))
    beaten = abs(int(shifts[rival]) - int(shifts[best])) > tolerance and rival_support >= agreeing
    confidence = 0.0 if beaten else agreeing / segments
    return OffsetResult(offset, peak, ir.fps, vi.fps, psr, confidence, agreeing, segments, beaten)


def _alike_in_time(ir: MotionSignal, vi: MotionSignal) -> tuple[MotionSignal, MotionSignal]:
    """The signal sampled more often, averaged over the other's sample spacing.

    A camera that holds frames (9 Hz sent at 30 fps) changes a few times a second; the
    other camera's changes in between are motion that the first one cannot show, and
    matching them against its straight-line interpolation only added noise (correlation
    peaks of 0.2-0.35 on held M3SVD clips, 0.3-0.5 once averaged).
    """
    ir_step, vi_step = float(np.median(np.diff(ir.times))), float(np.median(np.diff(vi.times)))
    if max(ir_step, vi_step) < 1.5 * min(ir_step, vi_step):
        return ir, vi
    finer, coarser = (ir, vi_step) if ir_step < vi_step else (vi, ir_step)
    width = max(1, round(coarser / min(ir_step, vi_step)))
    if width < 2 or len(finer.times) < width + MIN_FRAMES:
        return ir, vi
    kernel = np.ones(width) / width
    averaged = np.stack([np.convolve(column, kernel, mode="valid") for column in finer.energy.T], axis=1)
    smoothed = MotionSignal(np.convolve(finer.times, kernel, mode="valid"), averaged, finer.fps, finer.size)
    return (smoothed, vi) if finer is ir else (ir, smoothed)


def _window_lags(ir: np.ndarray, vi: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """The best lag (one of ``shifts``) of each of SEGMENTS windows of the infrared signal, matched on its own.

    The windows are SEGMENT_FRACTION of the signal long, spread evenly over it. A real offset
    holds for every stretch of the recording; a chance peak of unrelated or motionless
    signals does not, and the windows' own best lags scatter. A window that finds nothing
    gets a lag no shift can match.
    """
    length = int(len(ir) * SEGMENT_FRACTION)
    lags = np.full(SEGMENTS, np.iinfo(np.int64).max // 2, np.int64)
    if length < MIN_FRAMES:
        return lags
    for index, first in enumerate(np.linspace(0, len(ir) - length, SEGMENTS).round().astype(int)):
        part = ir[first : first + length]
        # part[j] is ir[first + j], which meets vi[first + j + shift].
        scores = np.array([_correlation_at(part, vi, int(first + shift), length // 2) for shift in shifts])
        if np.any(np.isfinite(scores)):
            lags[index] = int(shifts[int(np.nanargmax(scores))])
    return lags


def peak_to_sidelobe(scores: np.ndarray, best: int, exclusion: int) -> float:
    """How far the peak stands above the rest of the correlation curve, in its standard deviations.

    Samples within ``exclusion`` of the peak belong to it (a peak has width); the rest are
    the sidelobes. A periodic or flat motion signal gives rival peaks and a low ratio.
    """
    keep = np.isfinite(scores)
    keep[max(0, best - exclusion) : best + exclusion + 1] = False
    sidelobes = scores[keep]
    if len(sidelobes) < 4:
        return float("nan")
    spread = float(sidelobes.std())
    return float((scores[best] - sidelobes.mean()) / max(spread, 1e-6))


def trimmed(ir: MotionSignal, vi: MotionSignal, delay_frames: int) -> tuple[MotionSignal, MotionSignal]:
    """Synchronised signals made ``delay_frames`` apart: infrared frame k then shows visible frame k + delay.

    Both keep their own time bases starting at 0 (as two recordings do), so the offset to find
    is +delay_frames / fps. For benchmarks and tests of :func:`estimate_offset`.
    """
    ir_start, vi_start = max(0, delay_frames), max(0, -delay_frames)
    count = min(len(ir.energy) - ir_start, len(vi.energy) - vi_start)
    if count < MIN_FRAMES:
        raise CalibrationError(f"a delay of {delay_frames} frames leaves too few frames")

    def cut(signal: MotionSignal, start: int) -> MotionSignal:
        times = signal.times[start : start + count]
        return MotionSignal(times - times[0] + signal.times[0], signal.energy[start : start + count], signal.fps, signal.size)

    return cut(ir, ir_start), cut(vi, vi_start)


def sample_frame_pairs(
    ir_path: str | os.PathLike, vi_path: str | os.PathLike, count: int, time_offset_s: float = 0.0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``count`` (infrared, visible) frame pairs that show the same moments, each (H, W, 3) RGB uint8.

    The moments are visible frames spaced evenly over the time both clips cover; each takes the
    infrared frame nearest in time (infrared timestamps plus ``time_offset_s`` are on the visible
    clock), and a moment with no infrared frame within half an infrared frame interval (a
    dropped frame) is skipped. Two clips of one length and rate pair frame i with frame i, as
    picking indices did; clips of other lengths or rates, or an offset, no longer pair frames
    of different moments.
    """
    ir_times, vi_times = frame_times(ir_path) + time_offset_s, frame_times(vi_path)
    _check_overlap(ir_times, vi_times, ir_path, vi_path, time_offset_s)
    tolerance = 0.5 * _frame_interval(ir_times) + 1e-9  # 1e-9: exactly half a frame apart still pairs
    start, end = max(ir_times[0], vi_times[0]), min(ir_times[-1], vi_times[-1])
    inside = np.flatnonzero((vi_times >= start - tolerance) & (vi_times <= end + tolerance))
    chosen = inside[np.linspace(0, len(inside) - 1, min(count, len(inside))).round().astype(int)]
    nearest = [_nearest(ir_times, vi_times[v]) for v in chosen]
    indices = [(i, int(v)) for i, v in zip(nearest, chosen) if abs(ir_times[i] - vi_times[v]) <= tolerance]
    if not indices:
        raise CalibrationError(f"{ir_path} has no frame within half a frame of {vi_path}'s sampled times")
    ir_frames = _frames_at(ir_path, {i for i, _ in indices})
    vi_frames = _frames_at(vi_path, {v for _, v in indices})
    return [(ir_frames[i], vi_frames[v]) for i, v in indices]


def _check_overlap(ir_times: np.ndarray, vi_times: np.ndarray, ir_path, vi_path, time_offset_s: float) -> None:
    """Refuse two clips (times on one clock) that hardly overlap: their frames show different moments."""
    spans = [(times[0], times[-1] + _frame_interval(times, single=0.0)) for times in (ir_times, vi_times)]  # a frame lasts a step
    overlap = min(end for _, end in spans) - max(start for start, _ in spans)
    shorter = min(end - start for start, end in spans)
    if overlap < MIN_OVERLAP_SHARE * shorter or overlap < 0:
        raise CalibrationError(
            f"{ir_path} and {vi_path} hardly overlap in time: {max(overlap, 0.0):.2f} s of the shorter clip's {shorter:.2f} s, "
            f"with time_offset_s {time_offset_s:+g} s added to the infrared times; give recordings of the same moments, or check the offset"
        )


def frame_times(path: str | os.PathLike) -> np.ndarray:
    """(N,) seconds: every decoded frame's timestamp on the video's own clock."""
    with VideoReader(path, luma_only=True) as reader:
        return np.array([frame.t for frame in reader], dtype=np.float64)


def _frame_interval(times: np.ndarray, single: float = math.inf) -> float:
    """The typical step between frames (the median: a dropped frame does not move it); ``single`` for one frame."""
    return float(np.median(np.diff(times))) if len(times) > 1 else single


def _nearest(times: np.ndarray, t: float) -> int:
    """Index of the value of sorted ``times`` nearest to ``t``."""
    right = int(np.clip(np.searchsorted(times, t), 1, max(len(times) - 1, 1)))
    return right - 1 if len(times) == 1 or t - times[right - 1] <= times[right] - t else right


def _frames_at(path: str | os.PathLike, indices: set[int]) -> dict[int, np.ndarray]:
    """The frames of a video at ``indices`` (decode order), as (H, W, 3) RGB uint8."""
    frames = {}
    with VideoReader(path) as reader:
        for frame in reader:
            if frame.index in indices:
                frames[frame.index] = _rgb(planes_to_image(frame.planes))
            if len(frames) == len(indices):
                break
    if not frames:
        raise CalibrationError(f"{path}: no frame decoded")
    return frames


def _rgb(image: np.ndarray) -> np.ndarray:
    """A gray frame as three equal channels, so scene registration sees one layout."""
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


def _prepare(signal: MotionSignal, rate: float) -> np.ndarray:
    """(samples, regions): resampled to ``rate`` Hz, compressed, detrended, differenced, standardised.

    The first difference whitens the signal: motion energy changes slowly, so its raw
    correlation has a broad hump; the correlation of its changes has a sharp peak.
    Regions without motion are NaN columns.
    """
    energy = signal.energy.reshape(len(signal.energy), -1)
    grid = np.arange(signal.times[0], signal.times[-1] + 0.5 / rate, 1.0 / rate)
    values = np.log1p(np.stack([np.interp(grid, signal.times, column) for column in energy.T], axis=1))
    trend_samples = max(3, int(TREND_SECONDS * rate) | 1)
    if len(values) > trend_samples:
        kernel = np.ones(trend_samples) / trend_samples
        padded = np.pad(values, ((trend_samples // 2, trend_samples // 2), (0, 0)), mode="edge")
        trend = np.stack([np.convolve(column, kernel, mode="valid") for column in padded.T], axis=1)
        values = values - trend
    if WHITEN:
        values = np.diff(values, axis=0, prepend=values[:1])
    spread = values.std(axis=0)
    moving = spread > 1e-6
    if not moving.any():
        raise CalibrationError("one of the videos shows no motion; the offset needs something moving in view")
    prepared = np.full_like(values, np.nan)
    prepared[:, moving] = (values[:, moving] - values[:, moving].mean(axis=0)) / spread[moving]
    return prepared


def _matched_regions(ir: np.ndarray, vi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The region columns that move in both videos (all regions pooled when the grids differ)."""
    if ir.shape[1] != vi.shape[1]:
        raise CalibrationError("the two motion signals have different region grids")
    both = np.isfinite(ir[0]) & np.isfinite(vi[0])
    if not both.any():
        raise CalibrationError("no part of the view moves in both videos; the offset needs something moving in view")
    return ir[:, both], vi[:, both]


def _correlation_at(ir: np.ndarray, vi: np.ndarray, shift: int, min_overlap: int) -> float:
    """Mean over regions of the Pearson correlation of ir[k] with vi[k + shift] over their overlap."""
    first = max(0, -shift)
    last = min(len(ir), len(vi) - shift)
    if last - first < min_overlap:
        return float("nan")
    a, b = ir[first:last], vi[first + shift : last + shift]
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    denominator = np.sqrt(np.sum(a * a, axis=0) * np.sum(b * b, axis=0))
    valid = denominator > 0
    if not valid.any():
        return float("nan")
    return float(np.mean(np.sum(a * b, axis=0)[valid] / denominator[valid]))


def _parabolic_peak(scores: np.ndarray, index: int) -> float:
    """Sub-sample position of the peak from a parabola through it and its neighbours."""
    if index == 0 or index == len(scores) - 1 or not np.all(np.isfinite(scores[index - 1 : index + 2])):
        return 0.0
    left, centre, right = scores[index - 1 : index + 2]
    curvature = left - 2 * centre + right
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0
