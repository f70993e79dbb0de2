"""Where fused frames go: MP4 files, PNG folders, a ZeroMQ publisher, or a callback.

Sinks are looked up by kind in ``SINKS`` (an unknown kind is a one-line ``ConfigError``).
Each sink names the renderings it needs (``views``, see ``pipeline.views``), which the
fusion worker makes on the device; the runner gives every sink its own thread and
bounded queue (``SinkThread``), so a slow one never holds back another. Every sink is a
context manager and handles all streams, with each stream's rate and time base
(``StreamInfo``); files are opened at a stream's first frame, when its size is known.
The MP4 writer encodes the fused Y with the visible chroma as yuv420p planes, with no RGB
in between, and always flushes the encoder and closes the file, whatever ended the run.

ZeroMQ messages are three frames: the topic ``<topic>/<stream id>``, a JSON header, and
the raw pixels (C order) in the sink's ``pixel_format`` (``rgb24`` default, ``bgr24``, ``gray``)::

    {"stream": "cam0", "seq": 12, "t_fused": 0.4, "t_ir": 0.4, "t_vi": 0.4,
     "ir_index": 12, "vi_index": 12, "captured_unix": ..., "published_unix": ...,
     "shape": [480, 640, 3], "dtype": "uint8", "pixel_format": "rgb24", "content": "fused"}

``pipeline.subscriber.Subscriber`` reads them back.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import zmq

from ldfusion.errors import ConfigError, DataError, LDFusionError
from ldfusion.imageio import write_image
from ldfusion.video import VideoWriter, h264_encoder
from pipeline.config import PipelineConfig, SinkConfig, check_tcp_port
from pipeline.frames import EndOfStream, FusedFrame, StreamInfo
from pipeline.queues import FrameQueue
from pipeline.views import view_name

log = logging.getLogger(__name__)


class Sink(ABC):
    """Writes fused frames; ``outputs`` names what it wrote (paths or endpoints)."""

    kind: ClassVar[str] = ""
    views: tuple[str, ...] = ()  # the renderings ``write`` reads from ``FusedFrame.views``

    def __init__(self) -> None:
        self.outputs: list[str] = []

    @classmethod
    def from_config(cls, config: PipelineConfig, sink: SinkConfig, streams: dict[str, StreamInfo]) -> "Sink":
        raise NotImplementedError(f"{cls.__name__} is not built from a config")

    @abstractmethod
    def write(self, frame: FusedFrame) -> None: ...

    def prepare(self, sizes: dict[str, tuple[int, int]]) -> None:
        """Before capture starts: each stream's fused frame size (width, height), where known.
        A sink does here what would otherwise make its first frame wait."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


SINKS: dict[str, type[Sink]] = {}


def register_sink(cls: type[Sink]) -> type[Sink]:
    SINKS[cls.kind] = cls
    return cls


def build_sinks(config: PipelineConfig, streams: dict[str, StreamInfo]) -> list[Sink]:
    """The sinks a config asks for. If one fails to open, those opened are closed again."""
    sinks: list[Sink] = []
    try:
        for sink in config.sinks:
            if sink.kind not in SINKS:
                raise ConfigError(f"sinks: unknown sink kind {sink.kind!r}; choose one of {', '.join(sorted(SINKS))}")
            sinks.append(SINKS[sink.kind].from_config(config, sink, streams))
    except BaseException:
        for opened in sinks:
            opened.close()
        raise
    return sinks


def _path_for(config: PipelineConfig, sink: SinkConfig) -> Callable[[str], Path]:
    return lambda stream: config.sink_path(sink, stream)


# --- MP4 -------------------------------------------------------------------------------------


@register_sink
class Mp4Sink(Sink):
    """One H.264 MP4 per stream, encoded from yuv420p planes; pts from the frames' timestamps."""

    kind = "mp4"

    def __init__(
        self, path_for: Callable[[str], Path], streams: dict[str, StreamInfo], content: str = "fused", crf: int = 18,
        preset: str = "veryfast", fragmented: bool = False, keyint: int | None = None, encoder: str = "auto",
    ):
        super().__init__()
        self._path_for = path_for
        self._streams = streams
        self._view = view_name(content, "yuv420p")
        self._panels = 3 if content == "side_by_side" else 1  # IR | visible | fused, side by side
        self.views = (self._view,)
        # encoder: auto | libx264 | h264_nvenc, resolved before capture where the size is known
        # (``prepare``), else by the writer at the first frame (ldfusion.codecs)
        self._options = {"codec": encoder, "crf": crf, "preset": preset, "fragmented": fragmented, "keyint": keyint}
        self._writers: dict[str, VideoWriter] = {}

    @classmethod
    def from_config(cls, config, sink, streams):
        return cls(_path_for(config, sink), streams, sink.content, sink.crf, sink.preset, sink.fragmented, sink.keyint, sink.encoder)

    def prepare(self, sizes: dict[str, tuple[int, int]]) -> None:
        """Resolve the encoder for each stream's frame size now: probing NVENC creates a CUDA
        context, and on the sink thread the first live frames would queue behind it."""
        options = self._options
        for width, height in sizes.values():
            h264_encoder(options["codec"], width * self._panels, height, options["crf"], options["preset"])

    def write(self, frame: FusedFrame) -> None:
        stream = frame.meta.stream
        writer = self._writers.get(stream)
        if writer is None:
            info = self._streams[stream]
            writer = VideoWriter(self._path_for(stream), info.rate, info.time_base, colour=info.colour, **self._options)
            self._writers[stream] = writer
            self.outputs.append(str(writer.path))
        writer.write_planes(*frame.view(self._view), t=frame.meta.t)

    def close(self) -> None:
        errors = []
        for writer in self._writers.values():
            try:
                writer.close()
                log.info("wrote %d frame(s) to %s", writer.frames, writer.path)
            except LDFusionError as exc:
                errors.append(str(exc))
        if errors:
            raise DataError("could not finish MP4 file(s): " + "; ".join(errors))


# --- PNG -------------------------------------------------------------------------------------


@register_sink
class PngSink(Sink):
    """``<folder>/<seq>.png`` per frame (the folder may hold ``{stream}``)."""

    kind = "png"

    def __init__(self, folder_for: Callable[[str], Path], content: str = "fused"):
        super().__init__()
        self._folder_for = folder_for
        self._view = view_name(content, "rgb24")
        self.views = (self._view,)
        self._folders: dict[str, Path] = {}

    @classmethod
    def from_config(cls, config, sink, streams):
        return cls(_path_for(config, sink), sink.content)

    def write(self, frame: FusedFrame) -> None:
        folder = self._folders.get(frame.meta.stream)
        if folder is None:
            folder = self._folder_for(frame.meta.stream)
            folder.mkdir(parents=True, exist_ok=True)
            _remove_earlier_frames(folder)
            self._folders[frame.meta.stream] = folder
            self.outputs.append(str(folder))
        write_image(folder / f"{frame.meta.seq:06d}.png", frame.view(self._view))


_FRAME_NAME = re.compile(r"\d{6,}\.png")  # what PngSink names its frames


def _remove_earlier_frames(folder: Path) -> None:
    """An earlier run's frames: the run got here only with run.overwrite (``check_outputs``
    refuses a folder of frames otherwise), and replacing them file by file left the earlier
    run's later frames beside the new ones, another clip's frames in this stream's output.
    Other files in the folder are left alone."""
    earlier = [path for path in folder.iterdir() if _FRAME_NAME.fullmatch(path.name) and path.is_file()]
    for path in earlier:
        path.unlink()
    if earlier:
        log.info("%s: removed %d frame(s) of an earlier run (overwrite)", folder, len(earlier))


# --- ZeroMQ ----------------------------------------------------------------------------------


def frame_header(frame: FusedFrame, image: np.ndarray, content: str = "fused", pixel_format: str = "rgb24") -> dict:
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
        "pixel_format": pixel_format,
        "content": content,
    }


@register_sink
class ZmqSink(Sink):
    """A PUB socket (XPUB, to see subscribers join). It never blocks the pipeline: a
    subscriber that falls ``hwm`` frames behind misses frames, the others do not, in file mode
    too. ZeroMQ drops them on that subscriber's side without telling the publisher; the
    subscriber sees the gaps in ``seq`` (``ldfusion subscribe`` counts them)."""

    kind = "zmq"

    def __init__(
        self, endpoint: str, topic: str = "fused", hwm: int = 8, wait_subscribers: int = 0, wait_timeout_s: float = 10.0,
        linger_s: float = 1.0, pixel_format: str = "rgb24",
    ):
        super().__init__()
        check_tcp_port(endpoint, bind=True)
        self._topic = topic
        self._pixel_format = pixel_format
        self._view = view_name("fused", pixel_format)
        self.views = (self._view,)
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.XPUB)
        self._socket.setsockopt(zmq.SNDHWM, hwm)
        self._socket.setsockopt(zmq.LINGER, int(linger_s * 1000))  # let queued frames go out on close
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise ConfigError(f"cannot bind ZeroMQ publisher to {endpoint}: {exc}") from None
        # Where it is bound: ``tcp://127.0.0.1:*`` names the port the system chose, which a
        # subscriber needs (the config's ``*`` finds nothing).
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("publishing fused frames on %s", self.endpoint)  # now, not in the end-of-run summary: subscribers need it
        if not _is_local(self.endpoint):
            log.warning("ZeroMQ publisher on %s is reachable from other machines", self.endpoint)
        self.outputs.append(self.endpoint)
        self.sent = 0
        if wait_subscribers:
            self._wait_for(wait_subscribers, wait_timeout_s)

    @classmethod
    def from_config(cls, config, sink, streams):
        return cls(sink.endpoint, sink.topic, sink.hwm, sink.wait_subscribers, sink.wait_timeout_s, pixel_format=sink.pixel_format)

    def _wait_for(self, count: int, timeout_s: float) -> None:
        """Hold the run until ``count`` subscriptions arrived, so the first frames are not lost."""
        log.info("waiting up to %.0f s for %d subscriber(s) on %s", timeout_s, count, self.endpoint)
        deadline, joined = time.monotonic() + timeout_s, 0
        while joined < count:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                log.warning("%d of %d subscriber(s) joined %s; publishing anyway", joined, count, self.endpoint)
                return
            # A second at most a poll: ZeroMQ takes the timeout as a C int, which a long wait_timeout_s overflowed.
            if self._socket.poll(min(remaining_ms, 1000), zmq.POLLIN) and self._socket.recv()[:1] == b"\x01":  # \x00: unsubscribe
                joined += 1

    def write(self, frame: FusedFrame) -> None:
        image = np.ascontiguousarray(frame.view(self._view))
        header = json.dumps(frame_header(frame, image, pixel_format=self._pixel_format)).encode()
        topic = f"{self._topic}/{frame.meta.stream}".encode()
        self._socket.send_multipart([topic, header, image], flags=zmq.NOBLOCK, copy=False)
        self.sent += 1

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
    """Hands every fused frame to a function (tests, demos). ``views``: what the function
    reads from ``FusedFrame.views`` (default: the fused RGB and the registered inputs)."""

    kind = "callback"

    def __init__(self, callback: Callable[[FusedFrame], None], views: tuple[str, ...] = ("fused:rgb24", "ir:gray", "visible:rgb24")):
        super().__init__()
        if isinstance(views, str):  # a tuple of names; a string was read letter by letter ("no view 'f'")
            raise TypeError(f"views is a tuple of view names, e.g. ({views!r},); got the string {views!r}")
        self._callback = callback
        self.views = tuple(views)

    def write(self, frame: FusedFrame) -> None:
        self._callback(frame)


# --- one thread per sink -----------------------------------------------------------------


class SinkFanout:
    """Hands every fused frame to each sink's own bounded queue; each sink runs ``drain``
    on its own thread.

    File mode: ``put`` waits while a sink's queue is full, so nothing is lost (a slow sink
    slows the run only once its queue is full). Live mode: each queue keeps the newest
    frames and counts what it drops, so a slow sink never holds back another.
    ``on_done(frame)`` runs once every sink has written the frame (not for a frame a live
    queue dropped: the queue counts it).
    """

    def __init__(self, sinks: list[Sink], queue_size: int, live: bool, on_done: Callable[[FusedFrame], None]):
        self.sinks = sinks
        self.queues = [
            FrameQueue(f"sink{i}-{sink.kind or type(sink).__name__}", queue_size, drop_oldest=live, on_drop=self._dropped)
            for i, sink in enumerate(sinks)
        ]
        self._on_done = on_done
        self._remaining: dict[tuple[str, int], list] = {}  # [sinks still to write, none dropped it]
        self._lock = threading.Lock()

    def put(self, frame: FusedFrame) -> bool:
        """False when the run was aborted."""
        if not self.sinks:
            self._on_done(frame)
            return True
        with self._lock:
            self._remaining[(frame.meta.stream, frame.meta.seq)] = [len(self.sinks), True]
        return all(q.put(frame) for q in self.queues)

    def put_end(self, end: EndOfStream) -> None:
        """No more frames: each sink's thread ends after the frames its queue holds."""
        for q in self.queues:
            q.put_end(end)

    def drain(self, index: int) -> None:
        """Sink ``index``'s thread: write until the end sentinel."""
        sink, q = self.sinks[index], self.queues[index]
        while not isinstance(frame := q.get(), EndOfStream):
            sink.write(frame)
            self._finished(frame)

    def _dropped(self, frame: FusedFrame) -> None:
        self._finished(frame, wrote=False)

    def _finished(self, frame: FusedFrame, wrote: bool = True) -> None:
        key = (frame.meta.stream, frame.meta.seq)
        with self._lock:
            state = self._remaining.get(key)
            if state is None:
                return
            state[0] -= 1
            state[1] = state[1] and wrote
            if state[0] > 0:
                return
            del self._remaining[key]
        if state[1]:
            self._on_done(frame)
