"""Helpers for the pipeline tests: tiny synthetic videos, configs, fake cameras."""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ldfusion.checkpoint import load_model
from ldfusion.color import planes_to_image
from ldfusion.config import from_dict
from ldfusion.errors import DataError
from ldfusion.inference import Fuser, FuserOptions
from ldfusion.video import VideoReader, VideoWriter
from pipeline.config import PipelineConfig
from pipeline.sinks import CallbackSink

# A frame's index is written into a flat block in its top-left corner as 20 + 7 * (index
# mod 34), so tests can tell which source frame reached the output even after lossy steps.
MARK = 12  # block side in pixels
_BASE, _STEP = 20, 7
MARKS = (255 - _BASE) // _STEP + 1  # distinct marks; index i carries mark i % MARKS


def mark_value(index: int) -> int:
    return _BASE + _STEP * (index % MARKS)


def read_mark(image: np.ndarray) -> int:
    """The mark written by ``marked_frame`` (index mod ``MARKS``; works on gray or RGB)."""
    block = image[2 : MARK - 2, 2 : MARK - 2].astype(np.float64)
    return int(round((block.mean() - _BASE) / _STEP))


def texture(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth random pattern (so registration errors are visible), uint8 (H, W)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8)), dtype=np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def marked_frame(index: int, width: int, height: int, seed: int = 0, color: bool = True) -> np.ndarray:
    gray = texture(width, height, seed)
    gray[:MARK, :MARK] = mark_value(index)
    return np.repeat(gray[:, :, None], 3, axis=2) if color else gray


def write_video(
    path: Path,
    frames: list[np.ndarray],
    rate: float | Fraction,
    crf: int = 0,
    container_options: dict | None = None,
) -> Path:
    """H.264 (crf 0: lossless luma) MP4 through ``ldfusion.video``; gray frames become gray video."""
    with VideoWriter(path, Fraction(rate).limit_denominator(1001), crf=crf, preset="ultrafast", container_options=container_options) as writer:
        for image in frames:
            writer.write_image(image)
    return path


def marked_video(path: Path, n: int, rate: float, width: int = 64, height: int = 48, seed: int = 0, first: int = 0) -> Path:
    return write_video(path, [marked_frame(first + i, width, height, seed) for i in range(n)], rate)


def read_video(path: Path) -> dict:
    """Frames (RGB), pts, rate and time base of the first video stream."""
    with VideoReader(path) as reader:
        frames, pts = [], []
        for frame in reader:
            frames.append(planes_to_image(frame.planes))
            pts.append(frame.pts)
        return {"frames": frames, "pts": pts, "rate": reader.rate, "time_base": reader.time_base, "codec": reader.codec}


def make_config(ir: Path | str, vi: Path | str, sinks: list[dict] | None = None, out_dir: Path | None = None, **sections) -> PipelineConfig:
    """A one-stream config over two video files; ``sections`` merge into the top level
    (``stream={...}`` into the stream, ``model={...}``, ``run={...}``)."""
    stream = {"id": "cam0", "ir": {"kind": "video", "path": str(ir)}, "visible": {"kind": "video", "path": str(vi)}}
    stream.update(sections.pop("stream", {}))
    run = {"progress": False, "stats_interval_s": 60.0}
    if out_dir is not None:
        run["out_dir"] = str(out_dir)
    run.update(sections.pop("run", {}))
    model = {"batch_size": 3, "max_wait_ms": 5.0}
    model.update(sections.pop("model", {}))
    data = {"streams": [stream], "sinks": sinks or [], "run": run, "model": model, **sections}
    return from_dict(PipelineConfig, data)


def cpu_fuser(weights: Path) -> Fuser:
    return Fuser(load_model(weights), FuserOptions(device="cpu"))


class FakeCamera:
    """A stand-in for ``cv2.VideoCapture``: a camera running at ``fps`` from its creation.

    Like a real camera with a one-frame buffer, ``read`` waits for the next frame time and,
    when the reader is late, returns the newest frame (older ones are lost). Frame ``i``
    carries mark ``i % MARKS``. ``produced[i]`` is when frame ``i`` was due.
    ``fail_after``: ``read`` returns False after delivering that many frames (the camera stopped).
    """

    def __init__(self, fps: float, width: int = 64, height: int = 48, seed: int = 0, fail_after: int | None = None):
        self.fps = fps
        self.width, self.height = width, height
        self._start = time.monotonic()
        self._next = 0
        self._fail_after = fail_after
        self._frames = [marked_frame(i, width, height, seed) for i in range(MARKS)]
        self.produced: dict[int, float] = {}
        self.delivered = 0
        self.released = False
        self._lock = threading.Lock()

    def isOpened(self) -> bool:  # noqa: N802
        return not self.released

    def read(self) -> tuple[bool, np.ndarray | None]:
        with self._lock:
            if self.released or (self._fail_after is not None and self.delivered >= self._fail_after):
                return False, None
            due = self._start + self._next / self.fps
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:  # late: skip to the newest frame
                self._next = max(self._next, int((time.monotonic() - self._start) * self.fps))
                due = self._start + self._next / self.fps
            index = self._next
            self._next += 1
            self.delivered += 1
            self.produced[index] = due
            return True, self._frames[index % len(self._frames)].copy()

    def get(self, prop: int) -> float:
        reported = {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_WIDTH: self.width, cv2.CAP_PROP_FRAME_HEIGHT: self.height}
        return float(reported.get(prop, 0.0))

    def release(self) -> None:
        self.released = True


class Collect:
    """A sink for tests: keeps every fused frame (with its registered inputs)."""

    def __init__(self) -> None:
        self.frames: list = []

    def sink(self) -> CallbackSink:
        return CallbackSink(self.frames.append)


def decodable_frames(path: Path) -> int:
    """How many frames the reader decodes before the file ends or breaks."""
    try:
        with VideoReader(path, luma_only=True) as reader:
            return sum(1 for _ in reader)
    except DataError:
        return 0


def tagged_colour_clip(path: Path, rgb: np.ndarray, colorspace: int, n: int = 3) -> Path:
    """A clip of ``rgb`` frames encoded, and tagged, with AVColorSpace ``colorspace`` (1: BT.709,
    2: unspecified, FFmpeg converting by BT.601), limited range."""
    from av.video.reformatter import Colorspace

    matrix = Colorspace.ITU709 if colorspace == 1 else Colorspace.ITU601
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"crf": "0", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
        stream.codec_context.colorspace = stream.codec_context.color_primaries = stream.codec_context.color_trc = colorspace
        stream.codec_context.color_range = 1
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=matrix, dst_color_range="MPEG")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
