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

Cameras: timestamps are ``time.monotonic()`` when ``read()`` returned, relative to the
start of the run, a clock both cameras share. A camera that stops delivering is released
and reopened with exponential backoff, and each attempt is logged.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ldfusion.errors import DataError
from ldfusion.imageio import infrared_to_unit, list_images, read_infrared, read_visible
from ldfusion.video import DEFAULT_RATE, Planes, VideoReader
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

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        self.rate: Fraction = DEFAULT_RATE  # nominal frame rate
        self.time_base: Fraction = LIVE_TIME_BASE  # a clock on which t is exact (for MP4 pts)
        self.expected_frames: int | None = None
        self.reconnects = 0

    @abstractmethod
    def frames(self, stop: threading.Event) -> Iterator[tuple[int, float, Planes]]:
        """Yield (index, t seconds, planes) until the source ends or ``stop`` is set."""

    def close(self) -> None:
        pass


# --- video files ------------------------------------------------------------------------


class VideoFileSource(Source):
    """A video file through ``ldfusion.video.VideoReader``: planes as decoded, infrared as luma."""

    def __init__(self, path: Path, kind: str, max_frames: int | None = None) -> None:
        super().__init__(kind, str(path))
        self._reader = VideoReader(path, luma_only=kind == IR, max_frames=max_frames)
        self.time_base = self._reader.time_base
        self.rate = self._reader.rate
        if not self._reader.rate_stated:
            log.warning("%s does not state its frame rate; assuming %s fps", path, DEFAULT_RATE)
        self.expected_frames = self._reader.expected_frames

    def frames(self, stop: threading.Event) -> Iterator[tuple[int, float, Planes]]:
        for frame in self._reader:
            if stop.is_set():
                return
            yield frame.index, frame.t, frame.planes

    def close(self) -> None:
        self._reader.close()


# --- image folders ----------------------------------------------------------------------


class ImageFolderSource(Source):
    """Images sorted by name (naturally: 2 before 10); timestamps ``index / fps``."""

    def __init__(self, folder: Path, kind: str, fps: float, max_frames: int | None = None) -> None:
        super().__init__(kind, str(folder))
        images = list_images(folder)
        if not images:
            raise DataError(f"no images in {folder}")
        self._paths = [images[stem] for stem in sorted(images, key=_natural_key)][:max_frames]
        self._fps = fps
        self.rate = Fraction(fps).limit_denominator(1001)
        self.time_base = 1 / self.rate
        self.expected_frames = len(self._paths)

    def frames(self, stop: threading.Event) -> Iterator[tuple[int, float, Planes]]:
        for index, path in enumerate(self._paths):
            if stop.is_set():
                return
            if self.kind == IR:
                planes = Planes.gray((read_infrared(path) * 255.0 + 0.5).astype(np.uint8))
            else:
                planes = Planes.packed(read_visible(path))
            yield index, index / self._fps, planes


def _natural_key(stem: str) -> tuple:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.findall(r"\d+|\D+", stem))


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


class LiveCameraSource(Source):
    live = True

    def __init__(self, config: SourceConfig, kind: str, clock_origin: float, open_capture: OpenCapture | None = None):
        super().__init__(kind, f"camera {config.path}")
        self._config = config
        self._camera = config.camera_id
        self._open = open_capture or (lambda camera: open_opencv_capture(camera, config.read_timeout_s))
        self._origin = clock_origin
        # Opened now, so a camera that is not there is an error before the run starts.
        self._capture: Capture | None = self._open(self._camera)
        if not self._capture.isOpened():
            raise DataError(f"cannot open {self.name} (no such device, or the URL does not answer)")
        reported = self._capture.get(cv2.CAP_PROP_FPS) or 0.0
        fps = reported if 0 < reported < 1000 else config.fps or float(DEFAULT_RATE)
        self.rate = Fraction(fps).limit_denominator(1001)

    def frames(self, stop: threading.Event) -> Iterator[tuple[int, float, Planes]]:
        count, failures = 0, 0
        delay = self._config.reconnect_backoff_s
        while not stop.is_set():
            ok, image = self._capture.read() if self._capture is not None else (False, None)
            if ok and image is not None:
                failures, delay = 0, self._config.reconnect_backoff_s
                yield count, time.monotonic() - self._origin, camera_planes(image, self.name)
                count += 1
                continue
            if stop.is_set():
                return
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
            self._reopen()

    def _give_up_after(self, failures: int, count: int) -> None:
        limit = self._config.max_reconnects
        if limit is not None and failures > limit:
            raise DataError(f"{self.name} stopped delivering after {count} frame(s) and did not come back after {limit} reconnect attempt(s)")

    def _reopen(self) -> None:
        self.reconnects += 1
        capture = self._open(self._camera)
        if capture.isOpened():
            log.info("%s reconnected", self.name)
            self._capture = capture
        else:
            capture.release()

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def close(self) -> None:
        self._release()


# --- conversions ------------------------------------------------------------------------


def camera_planes(image: np.ndarray, name: str = "camera") -> Planes:
    """An OpenCV camera frame as it came: BGR (colour is converted once, on the device),
    gray, or deep gray stretched by the infrared rule; an alpha channel is dropped."""
    if image.dtype == np.uint16 and image.ndim == 2:
        return Planes.gray((infrared_to_unit(image, source=name) * 255.0 + 0.5).astype(np.uint8))
    if image.dtype != np.uint8:
        raise DataError(f"{name}: unsupported camera pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return Planes.packed(image[:, :, :3] if image.ndim == 3 else image, bgr=True)


# --- opening and driving ------------------------------------------------------------------


def open_source(config: SourceConfig, kind: str, clock_origin: float, open_capture: OpenCapture | None = None) -> Source:
    if config.kind == "video":
        return VideoFileSource(Path(str(config.path)), kind, config.max_frames)
    if config.kind == "images":
        assert config.fps is not None  # checked by SourceConfig
        return ImageFolderSource(Path(str(config.path)), kind, config.fps, config.max_frames)
    return LiveCameraSource(config, kind, clock_origin, open_capture)


def run_capture(
    source: Source,
    stream: str,
    out: FrameQueue,
    stop: threading.Event,
    on_frame: Callable[[CameraFrame], None] | None = None,
    realtime: bool = False,
) -> None:
    """Read ``source`` until it ends or ``stop`` is set, putting frames on ``out``.

    ``realtime`` paces a file at its recorded rate (in live mode a file plays like a camera). The end sentinel is always put, so the
    pairing stage never waits on a reader that has gone.
    """
    pace_origin: float | None = None
    try:
        for index, t, planes in source.frames(stop):
            if realtime and not source.live:
                if pace_origin is None:
                    pace_origin = time.monotonic() - t
                if stop.wait(max(0.0, pace_origin + t - time.monotonic())):
                    break
            frame = CameraFrame(stream, source.kind, index, t, time.monotonic(), time.time(), planes)
            if on_frame is not None:
                on_frame(frame)
            if not out.put(frame):
                break
    finally:
        out.put_end(EndOfStream(stream, source.kind))
        source.close()
