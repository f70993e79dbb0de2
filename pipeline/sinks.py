"""Where fused frames go: MP4 files, PNG folders, a ZeroMQ publisher, or a callback.

Every sink is a context manager and handles all streams; files are opened at a stream's
first frame (when its size is known). The MP4 writer always flushes the encoder and closes
the container on exit, whatever ended the run, so what was written plays.

ZeroMQ messages are three frames: the topic ``<topic>/<stream id>``, a JSON header, and
the raw pixels (C order)::

    {"stream": "cam0", "seq": 12, "t_fused": 0.4, "t_ir": 0.4, "t_vi": 0.4,
     "ir_index": 12, "vi_index": 12, "captured_unix": ..., "published_unix": ...,
     "shape": [480, 640, 3], "dtype": "uint8", "pixel_format": "rgb24", "content": "fused"}

``pipeline.subscriber.Subscriber`` reads them back.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import zmq

from ldfusion.errors import ConfigError, DataError
from ldfusion.imageio import side_by_side, write_image
from pipeline.config import PipelineConfig, SinkConfig
from pipeline.frames import FusedFrame, StreamInfo

log = logging.getLogger(__name__)

PIXEL_FORMATS = {3: "rgb24", 1: "gray"}


class Sink(ABC):
    """Writes fused frames; ``outputs`` names what it wrote (paths or endpoints)."""

    def __init__(self) -> None:
        self.outputs: list[str] = []

    @abstractmethod
    def write(self, frame: FusedFrame) -> None: ...

    def close(self) -> None:
        pass

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def render(frame: FusedFrame, content: str) -> np.ndarray:
    """The image a sink writes: the fused frame, or IR | visible | fused side by side."""
    if content == "side_by_side":
        return side_by_side(frame.ir, frame.visible, frame.fused)
    return frame.fused


# --- MP4 -------------------------------------------------------------------------------------


class Mp4Writer:
    """One H.264 MP4 file; pts come from the frames' capture timestamps."""

    def __init__(self, path: Path, info: StreamInfo, width: int, height: int, crf: int = 18, preset: str = "veryfast", fragmented: bool = False):
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if fragmented else {}
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(path), "w", options=options)
        except (av.FFmpegError, OSError) as exc:
            raise DataError(f"cannot create {path}: {exc}") from None
        try:
            self._stream = self._container.add_stream("libx264", rate=info.rate, options={"crf": str(crf), "preset": preset})
            self._stream.width, self._stream.height = _even(width), _even(height)
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = info.time_base
        except (av.FFmpegError, ValueError) as exc:
            self._container.close()
            raise ConfigError(f"cannot set up H.264 encoding for {path}: {exc}") from None
        self._time_base = info.time_base
        self._origin: float | None = None
        self._last_pts = -1
        self.frames = 0

    def write(self, image: np.ndarray, t: float) -> None:
        if self._origin is None:
            self._origin = t  # the file starts at pts 0
        pts = round((t - self._origin) / self._time_base)
        pts = max(pts, self._last_pts + 1)  # strictly increasing, whatever the clock did
        frame = av.VideoFrame.from_ndarray(_pad_to_even(image), format="rgb24")
        frame.pts, frame.time_base = pts, self._time_base
        try:
            self._container.mux(self._stream.encode(frame))
        except (av.FFmpegError, OSError) as exc:  # e.g. the disk is full
            raise DataError(f"cannot write {self.path}: {exc}") from None
        self._last_pts = pts
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and write the index; runs on every exit path."""
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
        log.info("wrote %d frame(s) to %s", self.frames, self.path)


class Mp4Sink(Sink):
    def __init__(self, path_for: Callable[[str], Path], streams: dict[str, StreamInfo], content: str = "fused", crf: int = 18, preset: str = "veryfast", fragmented: bool = False):
        super().__init__()
        self._path_for = path_for
        self._streams = streams
        self._content = content
        self._options = {"crf": crf, "preset": preset, "fragmented": fragmented}
        self._writers: dict[str, Mp4Writer] = {}

    def write(self, frame: FusedFrame) -> None:
        image = render(frame, self._content)
        writer = self._writers.get(frame.meta.stream)
        if writer is None:
            writer = self._open(frame.meta.stream, image)
        writer.write(image, frame.meta.t)

    def _open(self, stream: str, image: np.ndarray) -> Mp4Writer:
        height, width = image.shape[:2]
        if width % 2 or height % 2:
            log.info("stream %s: %dx%d is padded to even sides for yuv420p", stream, width, height)
        path = self._path_for(stream)
        writer = Mp4Writer(path, self._streams[stream], width, height, **self._options)
        self._writers[stream] = writer
        self.outputs.append(str(path))
        return writer

    def close(self) -> None:
        errors = []
        for writer in self._writers.values():
            try:
                writer.close()
            except (av.FFmpegError, OSError) as exc:
                errors.append(f"{writer.path}: {exc}")
        if errors:
            raise DataError("could not finish MP4 file(s): " + "; ".join(errors))


def _even(n: int) -> int:
    return n + (n % 2)


def _pad_to_even(image: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: repeat the last row/column when one is odd."""
    pad_h, pad_w = image.shape[0] % 2, image.shape[1] % 2
    if not (pad_h or pad_w):
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


# --- PNG -------------------------------------------------------------------------------------


class PngSink(Sink):
    """``<folder>/<seq>.png`` per frame (the folder may hold ``{stream}``)."""

    def __init__(self, folder_for: Callable[[str], Path], content: str = "fused"):
        super().__init__()
        self._folder_for = folder_for
        self._content = content
        self._folders: dict[str, Path] = {}

    def write(self, frame: FusedFrame) -> None:
        folder = self._folders.get(frame.meta.stream)
        if folder is None:
            folder = self._folder_for(frame.meta.stream)
            folder.mkdir(parents=True, exist_ok=True)
            self._folders[frame.meta.stream] = folder
            self.outputs.append(str(folder))
        write_image(folder / f"{frame.meta.seq:06d}.png", render(frame, self._content))


# --- ZeroMQ ----------------------------------------------------------------------------------


def frame_header(frame: FusedFrame, image: np.ndarray, content: str = "fused") -> dict:
    meta = frame.meta
    return {
        "stream": meta.stream,
        "seq": meta.seq,
        "t_fused": meta.t,
        "t_ir": meta.t_ir,
        "t_vi": meta.t_vi,
        "ir_index": meta.ir_index,
        "vi_index": meta.vi_index,
        "captured_unix": meta.captured_unix,
        "published_unix": time.time(),
        "shape": list(image.shape),
        "dtype": str(image.dtype),
        "pixel_format": PIXEL_FORMATS[image.shape[2] if image.ndim == 3 else 1],
        "content": content,
    }


class ZmqSink(Sink):
    """A PUB socket (XPUB, to see subscribers join). It never blocks the pipeline: a
    subscriber that falls ``hwm`` frames behind misses frames, the others do not."""

    def __init__(self, endpoint: str, topic: str = "fused", hwm: int = 8, wait_subscribers: int = 0, wait_timeout_s: float = 10.0, linger_s: float = 1.0):
        super().__init__()
        self._topic = topic
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.XPUB)
        self._socket.setsockopt(zmq.SNDHWM, hwm)
        self._socket.setsockopt(zmq.LINGER, int(linger_s * 1000))  # let queued frames go out on close
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise ConfigError(f"cannot bind ZeroMQ publisher to {endpoint}: {exc}") from None
        if not _is_local(endpoint):
            log.warning("ZeroMQ publisher on %s is reachable from other machines", endpoint)
        self.endpoint = endpoint
        self.outputs.append(endpoint)
        self.sent = 0
        self.dropped = 0
        if wait_subscribers:
            self._wait_for(wait_subscribers, wait_timeout_s)

    def _wait_for(self, count: int, timeout_s: float) -> None:
        """Hold the run until ``count`` subscriptions arrived, so the first frames are not lost."""
        log.info("waiting up to %.0f s for %d subscriber(s) on %s", timeout_s, count, self.endpoint)
        deadline, joined = time.monotonic() + timeout_s, 0
        while joined < count:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not self._socket.poll(remaining_ms, zmq.POLLIN):
                log.warning("%d of %d subscriber(s) joined %s; publishing anyway", joined, count, self.endpoint)
                return
            if self._socket.recv()[:1] == b"\x01":  # subscribe (\x00 is unsubscribe)
                joined += 1

    def write(self, frame: FusedFrame) -> None:
        image = np.ascontiguousarray(frame.fused)
        header = json.dumps(frame_header(frame, image)).encode()
        topic = f"{self._topic}/{frame.meta.stream}".encode()
        try:
            self._socket.send_multipart([topic, header, image], flags=zmq.NOBLOCK, copy=False)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1

    def close(self) -> None:
        self._socket.close()
        self._context.term()


def _is_local(endpoint: str) -> bool:
    if not endpoint.startswith("tcp://"):
        return True  # ipc:// and inproc:// never leave the machine
    host = endpoint[len("tcp://") :].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "[::1]", "::1")


# --- programmatic ------------------------------------------------------------------------


class CallbackSink(Sink):
    """Hands every fused frame to a function (tests, demos, an in-process detector)."""

    def __init__(self, callback: Callable[[FusedFrame], None]):
        super().__init__()
        self._callback = callback

    def write(self, frame: FusedFrame) -> None:
        self._callback(frame)


def build_sinks(config: PipelineConfig, streams: dict[str, StreamInfo]) -> list[Sink]:
    """The sinks a config asks for. If one fails to open, those opened are closed again."""
    sinks: list[Sink] = []
    try:
        for sink in config.sinks:
            sinks.append(_build_sink(config, sink, streams))
    except BaseException:
        for opened in sinks:
            opened.close()
        raise
    return sinks


def _build_sink(config: PipelineConfig, sink: SinkConfig, streams: dict[str, StreamInfo]) -> Sink:
    def path_for(stream: str, sink: SinkConfig = sink) -> Path:
        return config.sink_path(sink, stream)

    if sink.kind == "mp4":
        return Mp4Sink(path_for, streams, sink.content, sink.crf, sink.preset, sink.fragmented)
    if sink.kind == "png":
        return PngSink(path_for, sink.content)
    return ZmqSink(sink.endpoint, sink.topic, sink.hwm, sink.wait_subscribers, sink.wait_timeout_s)
