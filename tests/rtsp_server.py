"""Two real RTSP cameras on 127.0.0.1 for tests and ``scripts/live_latency.py``.

``RtspCamera`` runs ``tests/gst_rtsp_server.py`` (GStreamer's rtsp-server) under the
system Python as a subprocess on a free port, and can stop and restart it (a camera
outage). ``write_clips`` turns the M3SVD IR/visible pair (or, without the shared data, a
pair rendered by ``ldfusion.synthetic``) into the raw frames the servers loop.
``read_frame_number`` reads back the frame number each server marks into its frames, so a
test can tell which source frame reached the output (see the server's docstring: frame
``n`` is due at ``epoch + n / fps`` on ``time.time()``, for every server sharing the epoch).

Needs ``/usr/bin/python3`` with ``python3-gi``, ``gir1.2-gst-rtsp-server-1.0`` and
``gstreamer1.0-plugins-ugly`` (x264enc); ``unavailable_reason()`` says what is missing.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import av
import numpy as np

from ldfusion.synthetic import render_pair
from tests.gst_rtsp_server import CODE_CELL, CODE_CELLS

SERVER = Path(__file__).with_name("gst_rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # the distribution's Python, where python3-gi lives
INSTALL_HINT = "apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly"


def unavailable_reason() -> str | None:
    """Why the RTSP server cannot run here, or None when it can."""
    if not Path(SYSTEM_PYTHON).is_file():
        return f"no {SYSTEM_PYTHON} to run GStreamer's RTSP server ({INSTALL_HINT})"
    check = subprocess.run([SYSTEM_PYTHON, str(SERVER), "--check"], capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"GStreamer's RTSP server cannot run: {last} ({INSTALL_HINT})"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_clips(folder: Path, m3svd: Path | None, frames: int, width: int = 640, height: int = 480) -> tuple[Path, Path, str]:
    """Raw I420 IR and visible clips of ``frames`` frames: from the M3SVD pair in ``m3svd``
    (its first clip) when given, else rendered. Returns (ir path, visible path, what they are)."""
    folder.mkdir(parents=True, exist_ok=True)
    ir_path, vi_path = folder / "ir.i420", folder / "visible.i420"
    clips = sorted((m3svd / "infrared").glob("*.mp4")) if m3svd is not None else []
    if clips:
        name = clips[0].name
        for kind, path in (("infrared", ir_path), ("visible", vi_path)):
            _write_raw(path, _decoded(m3svd / kind / name, frames, width, height))
        return ir_path, vi_path, f"M3SVD {name}"
    pairs = [render_pair(i / 30.0, width, height) for i in range(frames)]
    _write_raw(ir_path, (av.VideoFrame.from_ndarray(ir, format="gray") for ir, _ in pairs))
    _write_raw(vi_path, (av.VideoFrame.from_ndarray(vi, format="rgb24") for _, vi in pairs))
    return ir_path, vi_path, "synthetic (ldfusion.synthetic)"


def _decoded(path: Path, frames: int, width: int, height: int):
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= frames:
                return
            yield frame.reformat(width=width, height=height)


def _write_raw(path: Path, frames) -> None:
    with open(path, "wb") as out:
        for frame in frames:
            out.write(frame.reformat(format="yuv420p").to_ndarray().tobytes())


def read_frame_number(image: np.ndarray) -> int | None:
    """The number marked into a served frame (gray or RGB, as decoded); None when the
    corner holds no code (the guard cells do not read white and black)."""
    gray = image if image.ndim == 2 else image.mean(axis=2)
    inner = slice(CODE_CELL // 4, CODE_CELL - CODE_CELL // 4)
    levels = [float(gray[inner, c * CODE_CELL :][:, inner].mean()) for c in range(CODE_CELLS)]
    bits = [level > 128 for level in levels]
    if not bits[0] or bits[-1]:
        return None
    return int("".join("1" if bit else "0" for bit in bits[1:-1]), 2)


class RtspCamera:
    """One served clip at ``url``; ``start``/``stop`` may be called again (an outage)."""

    def __init__(self, raw: Path, mount: str, fps: float, epoch: float, width: int = 640, height: int = 480, port: int | None = None):
        self.raw, self.mount, self.fps, self.epoch = raw, mount, fps, epoch
        self.width, self.height = width, height
        self.port = port or free_port()
        self._process: subprocess.Popen | None = None

    def url(self, credentials: str = "") -> str:
        return f"rtsp://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}{self.mount}"

    def start(self) -> None:
        """Start serving; returns once the server listens (a RuntimeError if it exits instead)."""
        command = [
            SYSTEM_PYTHON, str(SERVER), "--raw", str(self.raw), "--width", str(self.width), "--height", str(self.height),
            "--fps", str(self.fps), "--epoch", repr(self.epoch), "--port", str(self.port), "--mount", self.mount,
        ]
        log = self.raw.with_name(f"server{self.mount.replace('/', '_')}.log")
        with open(log, "ab") as stderr:  # a file: works under any pytest capture mode
            self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
        line = self._process.stdout.readline() if self._process.stdout else ""  # blocks until READY or exit
        if not line.startswith("READY"):
            self.stop()
            said = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"RTSP server for {self.mount} did not start: {' | '.join(said) or line.strip()!r}")

    def stop(self) -> None:
        """Kill the server, as a camera losing power (clients see the stream stop)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            if self._process.stdout:
                self._process.stdout.close()
            self._process = None

    def frame_due(self, t_unix: float) -> float:
        """The (fractional) frame number due at wall-clock time ``t_unix``."""
        return (t_unix - self.epoch) * self.fps

    def __enter__(self) -> RtspCamera:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
