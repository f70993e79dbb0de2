"""Where frames come from: video files (PyAV), image folders, and live cameras (OpenCV).

Every source yields ``(index, t, planes)``: ``t`` in seconds on the source's clock, the
pixels as ``ldfusion.video.Planes`` in the layout they arrived in, converted later, once,
on the fusion device: a video's own planes (infrared keeps only its luma), an image
folder's RGB (infrared as 8-bit luma), a camera's BGR. ``run_capture`` drives one source
in its own thread and puts ``CameraFrame``s on the stage's queue.

Files: timestamps are ``(pts - start_time) * time_base``, so two recordings of one scene
line up from their first frame (a constant ``sync.offset_s`` fixes a late start). A file
that ends early or holds damaged packets ends its stream with a warning saying how many
frames were read; a file that cannot be opened at all is a one-line ``DataError``.

Cameras: timestamps are on the run's clock, ``time.monotonic()`` relative to the start of
the run, which both cameras share. A frame's time is its arrival (when ``read()`` returned),
unless the stream states its own timestamps (``CAP_PROP_POS_MSEC`` rising from frame to
frame, as RTSP's RTP timestamps do): then it is ``stream time + anchor``, the anchor being
the smallest ``arrival - stream time`` seen (``StreamClock``). So a frame that is delivered
late or in a burst keeps the time the camera gave it, mapped onto the run's clock at the
camera's fastest delivery delay. Two cameras' times thus differ by the difference of their
fastest delays (transport + decode), a constant that ``sync.offset_s`` corrects; jitter
within a camera's bursts does not reach the pairing. The anchor may creep up by
``StreamClock.drift`` seconds per second, so a camera whose clock runs slow is followed.

A network camera that (re)connects first hands over what the decoder buffered while
connecting (a second or so of old frames, at once). Those frames are stale for a live
view and would be stamped with their arrival time, so they are skipped (counted in
``stale``) until the delivery delay holds steady for half a second of stream time (or,
without stream times, until a read waits for its frame); at most 5 s of frames. So each
(re)connect costs at least half a second of frames, and pairs never mix a stale frame of
one camera with a live one of the other. A camera that stops delivering (``read()`` fails, or
times out after ``read_timeout_s``) is an *outage*: it is logged, released and reopened
with exponential backoff, each attempt logged; ``outages`` and ``reconnects`` count them.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ldfusion.errors import DataError
from ldfusion.imageio import infrared_to_unit, read_infrared, read_visible, sorted_images, unit_to_uint8
from ldfusion.redact import mask_credentials
from ldfusion.video import DEFAULT_RATE, ColourTags, Planes, VideoReader
from pipeline.config import SourceConfig
from pipeline.frames import IR, CameraFrame, EndOfStream
from pipeline.queues import FrameQueue

log = logging.getLogger(__name__)

LIVE_TIME_BASE = Fraction(1, 90000)  # the MPEG clock: fine enough for any camera's timestamps


class Capture(Protocol):
    """What a live source needs from ``cv2.VideoCapture`` (tests pass fake cameras)."""

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's name)
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


OpenCapture = Callable[[int | str], Capture]


class Source(ABC):
    """One camera's frames. ``kind`` is IR or VISIBLE; ``name`` is used in messages."""

    live = False
    recording = False  # a recording given as a camera: delivered at its own times, with no delay of its own

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        self.rate: Fraction = DEFAULT_RATE  # nominal frame rate
        self.time_base: Fraction = LIVE_TIME_BASE  # a clock on which t is exact (for MP4 pts)
        self.expected_frames: int | None = None
        self.size: tuple[int, int] | None = None  # (width, height) when known before the first frame
        self.colour: ColourTags | None = None  # what a video file states of its colour
        self.outages = 0  # live: times the camera stopped delivering
        self.reconnects = 0  # live: times it was reopened and delivered again
        self.stale = 0  # live: frames buffered while (re)connecting, skipped

    @abstractmethod
    def frames(self, stop: threading.Event) -> Iterator[tuple[int, float, Planes]]:
        """Yield (index, t seconds, planes) until the source ends or ``stop`` is set."""

    def close(self) -> None:
        pass

    def frame_name(self, index: int) -> str:
        """Frame ``index`` as a message names it."""
        return f"frame {index} of {self.name}"


# --- video files ------------------------------------------------------------------------


class VideoFileSource(Source):
    """A video file through ``ldfusion.video.VideoReader``: planes as decoded, infrared as luma."""

    def __init__(self, path: Path, kind: str, max_frames: int | None = None, decode: str = "cpu",
                 threads: int | None = None, fps: float | None = None) -> None:
        super().__init__(kind, str(path))
        self._reader = VideoReader(path, luma_only=kind == IR, max_frames=max_frames, decode=decode, threads=threads,
                                   unstated_rate=fps)
        self.time_base = self._reader.time_base
        self.rate = self._reader.rate
        if fps is not None and self._reader.rate_stated and abs(float(self.rate) - fps) > 1e-3 * fps:
            log.warning("%s states its own rate, %.6g fps: the source's fps (%.6g) is for videos that state none, and is not used",
                        path, float(self.rate), fps)
        self.expected_frames = self._reader.expected_frames
        self.size = (self._reader.width, self._reader.height)
        self.colour = self._reader.colour

    def frames(self, stop: threading.Event) -> Iterator[tuple[int, float, Planes]]:
        for frame in self._reader:
            if stop.is_set():
                return
            yield frame.index, frame.t, frame.planes

    def close(self) -> None:
        self._reader.close()


# --- image folders ----------------------------------------------------------------------


class ImageFolderSource(Source):
    """Images sorted by name (naturally: 2 before 10); timestamps ``index / fps``.

    Two image folders of one stream hold the same names (``StreamConfig`` checks it), so
    frame i of each is the same name.
    """

    def __init__(self, folder: Path, kind: str, fps: float, max_frames: int | None = None) -> None:
        super().__init__(kind, str(folder))
        self._paths = sorted_images(folder)[:max_frames]
        if not self._paths:
            raise DataError(f"no images in {folder}")
        self._fps = fps
        self.rate = Fraction(fps).limit_denominator(1001)
        self.time_base = 1 / self.rate
        self.expected_frames = len(self._paths)

    def frame_name(self, index: int) -> str:
        return str(self._paths[index])

    def frames(self, stop: threading.Event) -> Iterator[tuple[int, float, Planes]]:
        for index, path in enumerate(self._paths):
            if stop.is_set():
                return
            if self.kind == IR:
                planes = Planes.gray(unit_to_uint8(read_infrared(path)))
            else:
                planes = Planes.packed(read_visible(path))
            yield index, index / self._fps, planes


# --- live cameras ---------------------------------------------------------------------------


def open_opencv_capture(camera: int | str, read_timeout_s: float = 5.0) -> Capture:
    """``cv2.VideoCapture`` for a device index, a file or a stream URL (RTSP, HTTP)."""
    if isinstance(camera, int):
        capture = cv2.VideoCapture(camera)
    else:
        ms = int(read_timeout_s * 1000)
        capture = cv2.VideoCapture(camera, cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # ask the driver for the newest frame, where it listens
    return capture


class StreamClock:
    """Maps a camera's own frame timestamps onto the run's clock (see the module docstring).

    ``stamp(arrival, stream_t)``: ``stream_t`` is the camera's time for the frame (None
    when it gives none). Times that do not rise fall back to the arrival time and restart
    the anchor. The result is never later than the arrival and always rises.
    """

    drift = 1e-3  # s/s the anchor may creep up by: follows cameras whose clocks run up to 0.1% slow

    def __init__(self) -> None:
        self._last_t = float("-inf")  # kept across resets: times rise for the source's whole life
        self.reset()

    def reset(self) -> None:
        """Forget the anchor (after a reconnect the stream's clock starts again)."""
        self._anchor: float | None = None
        self._last_arrival = 0.0
        self._last_stream_t: float | None = None

    def stamp(self, arrival: float, stream_t: float | None) -> float:
        if stream_t is None or (self._last_stream_t is not None and stream_t <= self._last_stream_t):
            self._anchor = None
            t = arrival
        else:
            delay = arrival - stream_t
            if self._anchor is None:
                self._anchor = delay
            else:
                self._anchor = min(self._anchor + self.drift * (arrival - self._last_arrival), delay)
            t = min(stream_t + self._anchor, arrival)  # equal when this frame came fastest (rounding aside)
        self._last_arrival, self._last_stream_t = arrival, stream_t
        self._last_t = t = max(t, self._last_t + 1e-6)
        return t


class LiveCameraSource(Source):
    live = True

    def __init__(self, config: SourceConfig, kind: str, clock_origin: float, open_capture: OpenCapture | None = None):
        super().__init__(kind, f"camera {mask_credentials(config.path)}")
        self._config = config
        self._camera = config.camera_id
        self._open = open_capture or (lambda camera: open_opencv_capture(camera, config.read_timeout_s))
        self._origin = clock_origin
        self._clock = StreamClock()
        # Opened now, so a camera that is not there is an error before the run starts.
        self._capture: Capture | None = self._open(self._camera)
        if not self._capture.isOpened():
            raise DataError(f"cannot open {self.name} (no such device, or the URL does not answer)")
        self._network = isinstance(self._camera, str) and "://" in self._camera
        # A recording given as a camera: OpenCV decodes it as fast as it can, so two such
        # "cameras" drifted apart and nearly every pair joined frames seconds apart. It is
        # delivered at its own rate instead, as a camera would deliver it.
        self.recording = isinstance(self._camera, str) and Path(self._camera).is_file()  # delivered at its own times
        if self.recording:  # OpenCV says 25 fps for a raw stream whatever it holds; ldfusion's reader knows
            self.rate = _recording_rate(self._camera, config.fps)
        else:
            reported = self._capture.get(cv2.CAP_PROP_FPS) or 0.0
            fps = reported if 0 < reported < 1000 else config.fps or float(DEFAULT_RATE)
            self.rate = Fraction(fps).limit_denominator(1001)
        self.size = _reported_size(self._capture)
        self._playback_start: float | None = None  # when the recording's first frame was (or is) due
        self._position = 0.0  # the recording's position, seconds, of the frame last delivered
        self._restarts_since_frame = 0  # ways of starting the recording again tried since its last frame
        self._frames_played = 0  # since the recording (re)started: its position where it gives no times
        self._catching_up = self._network
        self._stale_now = 0  # stale frames skipped since the last (re)connect
        self._previous_read: tuple[float, float | None] | None = None  # (arrival, stream time) while catching up
        self._settled_delay: float | None = None  # the backlog's delivery delay when it last shrank
        self._settled_since = 0.0

    def frames(self, stop: threading.Event) -> Iterator[tuple[int, float, Planes]]:
        count, failures = 0, 0
        delay = self._config.reconnect_backoff_s
        while not stop.is_set():
            ok, image = self._capture.read() if self._capture is not None else (False, None)
            if ok and image is not None and image.size > 0:  # an empty frame counts as a failed read
                if self.recording and self._wait_for_due_time(stop):
                    return
                arrival, stream_t = time.monotonic(), self._stream_time()
                if self._skip_buffered(arrival, stream_t):
                    continue
                self._restarts_since_frame = 0
                if failures:
                    log.info("%s delivers again after %d attempt(s)", self.name, failures)
                    self.reconnects += 1
                failures, delay = 0, self._config.reconnect_backoff_s
                yield count, self._clock.stamp(arrival - self._origin, stream_t), camera_planes(image, self.name)
                count += 1
                continue
            if stop.is_set():
                return
            if self.recording and count and self._start_again():
                continue
            if failures == 0:
                self.outages += 1
                log.warning("%s: outage %d: no frame (the stream stopped or timed out)", self.name, self.outages)
            failures += 1
            self._give_up_after(failures, count)
            log.warning(
                "%s stopped delivering after %d frame(s); reconnecting in %.1f s (attempt %d)",
                self.name, count, delay, failures,
            )
            self._release()
            if stop.wait(delay):
                return
            delay = min(2 * delay, self._config.reconnect_max_s)
            if self._reopen():
                log.info("%s reconnected", self.name)

    def _start_again(self) -> bool:
        """A recording at its end is opened again, its first frame due one frame period after
        its last (it was reopened as after an outage: a warning each time round and half a
        second without frames). Not a seek back: MPEG-TS and raw H.264 said the seek worked
        and then read nothing, and MPEG-TS with B-frames landed on its next keyframe, 1 s in.
        False when the file does not open or gave no frame since the last time: an outage."""
        if self._restarts_since_frame:
            return False
        self._restarts_since_frame += 1
        last_due = self._playback_start + self._position if self._playback_start is not None else time.monotonic()
        self._release()
        if not self._reopen():
            return False
        log.debug("%s: starting again at its first frame", self.name)
        self._playback_start = last_due + 1.0 / float(self.rate)
        self._position, self._frames_played = 0.0, 0
        return True

    def _wait_for_due_time(self, stop: threading.Event) -> bool:
        """Hold a recording's frame until its time (its position since the first frame delivered);
        True when the run stopped meanwhile. A raw stream (.h264) has no times: its position is
        counted in frames at its rate (it was delivered as fast as it decoded, 75 fps for 20)."""
        stream_t = self._stream_time()
        position = stream_t if stream_t is not None else self._frames_played / float(self.rate)
        self._frames_played += 1
        now = time.monotonic()
        if self._playback_start is None or (position == 0.0 and self._position != 0.0):  # the first frame, or reopened
            self._playback_start = now - position
        self._position = position
        return stop.wait(max(0.0, self._playback_start + position - now))

    def _skip_buffered(self, arrival: float, stream_t: float | None) -> bool:
        """Right after a network camera (re)connects: is this frame part of a stale backlog?

        With stream times, the backlog shows as a delivery delay (arrival - stream time)
        that keeps shrinking while it drains; frames count as stale until the delay has
        not shrunk by half a frame period for ``_SETTLE_S`` of stream time. Without them,
        a frame that came back faster than half a frame period after the previous one was
        waiting in a buffer. The first ``_JUDGED_AFTER`` frames are skipped in any case.
        """
        if not self._catching_up:
            return False
        previous, self._previous_read = self._previous_read, (arrival, stream_t)
        period = 1.0 / float(self.rate)
        rising = previous is not None and stream_t is not None and previous[1] is not None and stream_t > previous[1]
        if rising:
            assert stream_t is not None
            delay = arrival - stream_t
            if self._settled_delay is None or delay < self._settled_delay - 0.5 * period:
                self._settled_delay, self._settled_since = delay, stream_t
            stale = stream_t - self._settled_since < _SETTLE_S
        elif previous is None or self._stale_now < _JUDGED_AFTER:  # too early to tell (RTSP gives the first frames no time)
            stale = True
        else:
            stale = arrival - previous[0] < 0.5 * period
        if stale and self._stale_now < _MAX_STALE_S * float(self.rate):
            self.stale += 1
            self._stale_now += 1
            return True
        self._catching_up = False
        return False

    def _stream_time(self) -> float | None:
        """The camera's own time for the frame just read, in seconds; None when it gives none."""
        assert self._capture is not None
        ms = self._capture.get(cv2.CAP_PROP_POS_MSEC)
        return ms / 1000.0 if ms and ms > 0 else None  # 0: not given (or the first frame; it is skipped on connect anyway)

    def _give_up_after(self, failures: int, count: int) -> None:
        limit = self._config.max_reconnects
        if limit is not None and failures > limit:
            raise DataError(f"{self.name} stopped delivering after {count} frame(s) and did not come back after {limit} reconnect attempt(s)")

    def _reopen(self) -> bool:
        """Open the camera (or recording) again, its clock and catch-up state anew; False when it does not open."""
        capture = self._open(self._camera)
        if not capture.isOpened():
            capture.release()
            return False
        self._capture = capture
        self._clock.reset()
        self._catching_up, self._stale_now, self._previous_read, self._settled_delay = self._network, 0, None, None
        return True

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def close(self) -> None:
        self._release()


def _recording_rate(path: str, fps: float | None) -> Fraction:
    """A video file's frame rate as ``ldfusion.video`` reads it (a raw stream's from its
    bitstream, else the source's ``fps``)."""
    try:
        with VideoReader(path, unstated_rate=fps) as reader:
            return reader.rate
    except DataError as exc:
        raise DataError(f"camera {path}: {exc}") from None


def _reported_size(capture: Capture) -> tuple[int, int] | None:
    """The frame size a camera reports on opening (0 from drivers that do not know yet: None)."""
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    return (width, height) if width > 0 and height > 0 else None


_MAX_STALE_S = 5.0  # a (re)connecting camera's buffered frames skipped, at most (in seconds of frames)
_SETTLE_S = 0.5  # stream time the delivery delay must hold steady before frames count as live
_JUDGED_AFTER = 3  # frames after a (re)connect skipped before any rule can judge them


# --- conversions ------------------------------------------------------------------------


def camera_planes(image: np.ndarray, name: str = "camera") -> Planes:
    """An OpenCV camera frame as it came: BGR (colour is converted once, on the device),
    gray, or deep gray stretched by the infrared rule; an alpha channel is dropped."""
    if image.size == 0:  # some drivers hand back empty arrays; OpenCV would raise a bare cv2.error
        raise DataError(f"{name} delivered an empty frame ({image.shape})")
    if image.dtype == np.uint16 and image.ndim == 2:
        return Planes.gray(unit_to_uint8(infrared_to_unit(image, source=name)))
    if image.dtype != np.uint8:
        raise DataError(f"{name}: unsupported camera pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return Planes.packed(image[:, :, :3] if image.ndim == 3 else image, bgr=True)


# --- opening and driving ------------------------------------------------------------------


def open_source(config: SourceConfig, kind: str, clock_origin: float, open_capture: OpenCapture | None = None,
                decoder_threads: int | None = None) -> Source:
    """``decoder_threads``: FFmpeg threads for a video file (None: FFmpeg's choice)."""
    if config.kind == "video":
        return VideoFileSource(Path(str(config.path)), kind, config.max_frames, config.decode, decoder_threads, config.fps)
    if config.kind == "images":
        assert config.fps is not None  # checked by SourceConfig
        return ImageFolderSource(Path(str(config.path)), kind, config.fps, config.max_frames)
    return LiveCameraSource(config, kind, clock_origin, open_capture)


@dataclass(frozen=True)
class Replay:
    """How a recording plays as if live (``run_capture``): its frame at time t is put no
    sooner than ``start + lag + t`` (``time.monotonic()``), and carries time ``t + shift``."""

    start: float  # when the run's recordings start playing: one for all, so they play in step
    # An IR recording's sync offset: each frame plays when it is due on the visible clock. A
    # recording that starts seconds into the other played that early, and the pairing, which
    # holds 128 IR frames, had let the first partners go when their visible frames came.
    lag: float = 0.0
    shift: float = 0.0  # onto the run's clock, where a camera of the same stream counts its times


def run_capture(
    source: Source,
    stream: str,
    out: FrameQueue,
    stop: threading.Event,
    on_frame: Callable[[CameraFrame], None] | None = None,
    replay: Replay | None = None,
) -> None:
    """Read ``source`` until it ends or ``stop`` is set, putting frames on ``out``.

    ``replay`` paces a recording at its recorded rate (in live mode, or with ``run.realtime``,
    a file plays like a camera); None: as fast as it decodes. The end sentinel is always put,
    so the pairing stage never waits on a reader that has gone.
    """
    replay = replay if replay is not None and not source.live else None
    try:
        for index, t, planes in source.frames(stop):
            if replay is not None:
                if stop.wait(max(0.0, replay.start + replay.lag + t - time.monotonic())):
                    break
                t += replay.shift
            frame = CameraFrame(stream, source.kind, index, t, time.monotonic(), time.time(), planes)
            if on_frame is not None:
                on_frame(frame)
            if not out.put(frame):
                break
    finally:
        out.put_end(EndOfStream(stream, source.kind))
        source.close()
