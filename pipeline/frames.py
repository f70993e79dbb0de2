"""What travels between the stages: one frame's identity and timestamps, plus its pixels.

Every stage reads times from these records instead of keeping its own clocks, so pairing,
MP4 presentation timestamps and ZeroMQ headers agree with each other.

Timestamps are seconds on the stream's capture clock: ``pts * time_base`` relative to the
start of a file, ``index / fps`` for an image folder, and ``time.monotonic()`` relative to
the start of the run for a live camera. ``captured_unix`` is the wall-clock time the frame
was read, which subscribers in other processes can compare with their own clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from torch import Tensor

from ldfusion.video import ColourTags, Planes

IR = "ir"
VISIBLE = "visible"
KINDS = (IR, VISIBLE)


@dataclass(frozen=True)
class CameraFrame:
    """One frame from one camera (or file) before pairing, in the layout it arrived in.

    ``planes``: a video's own planes (infrared: luma only), an image folder's RGB, a
    camera's BGR; ``ldfusion.color`` converts them on the fusion device.
    """

    stream: str
    kind: str  # IR or VISIBLE
    index: int  # position in its source, from 0
    t: float  # capture timestamp, seconds (see the module docstring)
    captured_mono: float  # time.monotonic() when read: latency is measured from here
    captured_unix: float  # time.time() when read
    planes: Planes


@dataclass(frozen=True)
class FrameMeta:
    """Identity and times of one output frame, from pairing to the sinks."""

    stream: str
    seq: int  # number of the pair within the stream, from 0; a gap means live mode dropped a frame after pairing
    t: float  # output timestamp: the leader frame's capture time (see sync.py)
    t_ir: float  # infrared capture time with the configured offset added
    t_vi: float  # visible capture time
    ir_index: int
    vi_index: int
    captured_mono: float  # the later of the two frames' read times
    captured_unix: float

    @property
    def skew_s(self) -> float:
        """How far apart in time the paired frames were captured."""
        return self.t_ir - self.t_vi


@dataclass(frozen=True)
class FramePair:
    """A synchronised pair, still in the cameras' layouts; registered on the fusion device."""

    meta: FrameMeta
    ir: Planes
    visible: Planes


@dataclass(frozen=True)
class DeviceFrame:
    """A fused frame as tensors on the fusion device (``pipeline.fused_frames(config)``, the
    ``device`` view): ``rgb`` (3, H, W) and ``ycrcb`` (3, H, W) float in [0, 1], ``ir``
    (1, H, W) the registered infrared luma. Views into the batch: no copy was made."""

    meta: FrameMeta
    rgb: Tensor
    ycrcb: Tensor
    ir: Tensor


@dataclass(frozen=True)
class FusedFrame:
    """A fused frame with the renderings the sinks asked for (``pipeline.views``)."""

    meta: FrameMeta
    views: dict[str, Any] = field(default_factory=dict)

    def view(self, name: str) -> Any:
        try:
            return self.views[name]
        except KeyError:
            raise KeyError(f"view {name!r} was not rendered; a sink must list it in its views (have: {sorted(self.views)})") from None

    @property
    def fused(self):
        """(H, W, 3) RGB uint8."""
        return self.view("fused:rgb24")

    @property
    def ir(self):
        """(H, W) uint8: the registered infrared frame."""
        return self.view("ir:gray")

    @property
    def visible(self):
        """(H, W, 3) RGB uint8: the registered visible frame."""
        return self.view("visible:rgb24")


@dataclass(frozen=True)
class StreamInfo:
    """What the sinks need to know about a stream pair before its first frame."""

    stream: str
    rate: Fraction  # nominal output frame rate (the leader source's)
    time_base: Fraction  # MP4 time base: the leader file's own, so pts stay exact
    expected_frames: int | None  # leader frames in a file, when the container says
    live: bool
    colour: ColourTags | None = None  # what the visible video states of its colour: an MP4 of the stream states the same


@dataclass(frozen=True)
class EndOfStream:
    """Sentinel put on a queue after a stream's (or a camera's) last item."""

    stream: str
    kind: str | None = None  # IR or VISIBLE on a camera's queue; None after pairing
