"""A looping H.264 RTSP camera for tests and benchmarks: GStreamer's rtsp-server.

Run by the system's Python (Debian's ``/usr/bin/python3`` with ``python3-gi`` and
``gir1.2-gst-rtsp-server-1.0``), not by the project's virtualenv, so this file needs only
the standard library and ``gi``; ``tests/rtsp_server.py`` starts and stops it::

    /usr/bin/python3 tests/gst_rtsp_server.py --raw ir.i420 --width 640 --height 480 \\
        --fps 30 --port 8554 --mount /ir --epoch 1764180000.0

Convention: the served scene is a function of wall-clock time. Frame ``n`` is due at
``epoch + n / fps`` (``time.time()``) and shows clip frame ``n % len(clip)`` with ``n``
written into its top-left corner as a binary code (``CODE_*`` below). Servers started with
the same epoch show the same frame number at the same moment, so a server restarted after
an outage is back in step with the other one, as two cameras watching one scene are. A
server that falls behind skips frames, like a camera.

The clip is raw I420 (Y plane, then U and V at half size), frame after frame. Frames are
encoded by x264 (zero-latency tuning, a keyframe every second) and sent as RTP; all
clients of a mount share one encoder. It prints ``READY <port>`` once it listens.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

# The frame code: CODE_BITS bits of n (most significant first) as CODE_CELL x CODE_CELL
# black (0) or white (1) squares along the top edge, framed by a white cell on the left
# and a black one on the right, so a reader can tell a code from picture content.
CODE_CELL = 16
CODE_BITS = 16
CODE_CELLS = CODE_BITS + 2  # white guard, the bits, black guard
CODE_WIDTH = CODE_CELL * CODE_CELLS
_WHITE, _BLACK = 255, 0


def code_cells(n: int) -> list[int]:
    """Luma of each cell of frame ``n``'s code, left to right."""
    bits = [(n >> (CODE_BITS - 1 - i)) & 1 for i in range(CODE_BITS)]
    return [_WHITE] + [_WHITE if bit else _BLACK for bit in bits] + [_BLACK]


def write_code(frame: bytearray, n: int, width: int, height: int) -> None:
    """Write frame ``n``'s code into an I420 frame: luma cells, neutral chroma under them."""
    for i, value in enumerate(code_cells(n)):
        cell = bytes([value]) * CODE_CELL
        for row in range(CODE_CELL):
            start = row * width + i * CODE_CELL
            frame[start : start + CODE_CELL] = cell
    neutral = bytes([128]) * (CODE_WIDTH // 2)
    chroma_width = width // 2
    for plane_start in (width * height, width * height + chroma_width * (height // 2)):
        for row in range(CODE_CELL // 2):
            start = plane_start + row * chroma_width
            frame[start : start + CODE_WIDTH // 2] = neutral


class LoopingClip:
    """The clip's frames, served by wall-clock frame number (see the module docstring)."""

    def __init__(self, path: str, width: int, height: int, fps: float, epoch: float) -> None:
        size = width * height * 3 // 2
        with open(path, "rb") as file:
            data = file.read()
        if not data or len(data) % size:
            raise SystemExit(f"{path}: {len(data)} bytes is not a whole number of {width}x{height} I420 frames")
        self.frames = [data[i : i + size] for i in range(0, len(data), size)]
        self.width, self.height, self.fps, self.epoch = width, height, fps, epoch
        self.next_n: int | None = None

    def due(self, n: int) -> float:
        return self.epoch + n / self.fps

    def next_frame(self) -> tuple[int, bytes]:
        """Wait until the next frame is due; returns its number and pixels."""
        now_n = math.ceil((time.time() - self.epoch) * self.fps)
        n = now_n if self.next_n is None else max(self.next_n, now_n - 1)  # late: skip to the newest
        delay = self.due(n) - time.time()
        if delay > 0:
            time.sleep(delay)
        self.next_n = n + 1
        frame = bytearray(self.frames[n % len(self.frames)])
        write_code(frame, n, self.width, self.height)
        return n, bytes(frame)


def serve(args: argparse.Namespace) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    clip = LoopingClip(args.raw, args.width, args.height, args.fps, args.epoch)
    fps_fraction = f"{round(args.fps * 1000)}/1000"
    launch = (
        f"( appsrc name=src is-live=true format=time do-timestamp=false block=false "
        f"caps=video/x-raw,format=I420,width={args.width},height={args.height},framerate={fps_fraction} "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={max(1, round(args.fps))} bitrate={args.kbps} "
        f"! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )

    def push(appsrc, _length, last_pts: list[int]) -> None:  # appsrc's thread: sleeping here paces the stream
        n, pixels = clip.next_frame()
        buffer = Gst.Buffer.new_wrapped(pixels)
        # Stamped with the time the frame was due (its "exposure"), not when a busy machine
        # got round to sending it, as a camera stamps its frames.
        running_now = appsrc.get_clock().get_time() - appsrc.get_base_time()
        pts = max(last_pts[0] + 1, running_now - int((time.time() - clip.due(n)) * Gst.SECOND), 0)
        buffer.pts, buffer.duration, last_pts[0] = pts, int(Gst.SECOND / clip.fps), pts
        appsrc.emit("push-buffer", buffer)

    def configure(_factory, media) -> None:
        # Each media (a new one after the last client left) has its own running time, so its
        # own last pts: one carried over would stamp the new media's frames as far in the
        # future as the old media lived, and a client reconnecting would wait that long.
        media.get_element().get_child_by_name("src").connect("need-data", push, [-1])

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    factory.connect("media-configure", configure)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on {args.address}:{args.port}")
    print(f"READY {args.port}", flush=True)
    GLib.MainLoop().run()


def check() -> None:
    """Exit 0 when GStreamer, its RTSP server and x264enc can be loaded."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import Gst, GstRtspServer  # noqa: F401

    Gst.init(None)
    missing = [name for name in ("appsrc", "x264enc", "rtph264pay") if Gst.ElementFactory.find(name) is None]
    if missing:
        raise SystemExit(f"GStreamer elements missing: {', '.join(missing)}")
    print("ok")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a raw I420 clip as a looping H.264 RTSP stream with frame numbers marked in.")
    parser.add_argument("--check", action="store_true", help="only check that GStreamer's RTSP server and x264 are installed")
    parser.add_argument("--raw", help="raw I420 frames, one after another")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--epoch", type=float, default=None, help="time.time() of frame 0 (default: now)")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--mount", default="/stream")
    parser.add_argument("--kbps", type=int, default=4000, help="x264 bitrate")
    args = parser.parse_args(argv)
    if args.check:
        check()
        return 0
    if not args.raw:
        parser.error("--raw is required")
    if args.width % 2 or args.height % 2 or args.width < CODE_WIDTH or args.height < CODE_CELL:
        parser.error(f"need an even size of at least {CODE_WIDTH}x{CODE_CELL}; got {args.width}x{args.height}")
    if args.epoch is None:
        args.epoch = time.time()
    serve(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
