"""What travels between the stages: one frame's identity and timestamps, plus its pixels.

Every stage reads times from these records instead of keeping its own clocks, so pairing,
MP4 presentation timestamps and ZeroMQ headers agree with each other.

Timestamps are seconds on the stream's capture clock: ``pts * time_base`` relative to the
start of a file, ``index / fps`` for an image folder, and ``time.monotonic()`` relative to
the start of the run for a live camera. ``captured_unix`` is the wall-clock time the frame
was read, which subscribers in other processes can compare with their own clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

IR = "ir"
VISIBLE = "visible"
KINDS = (IR, VISIBLE)


@dataclass(frozen=True)
class CameraFrame:
    """One frame from one camera (or file) before pairing.

    ``image`` is (H, W) uint8 for infrared and (H, W, 3) RGB uint8 for visible.
    """

    stream: str
    kind: str  # IR or VISIBLE
    index: int  # position in its source, from 0
    t: float  # capture timestamp, seconds (see the module docstring)
    captured_mono: float  # time.monotonic() when read: latency is measured from here
    captured_unix: float  # time.time() when read
    image: np.ndarray


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
    """A synchronised pair. ``ir`` (H, W) and ``visible`` (H, W, 3) RGB, both uint8.

    ``registered`` tells whether the registration warp has already been applied (on the
    CPU in the pairing thread) or is still to come (on the GPU in the fusion worker).
    """

    meta: FrameMeta
    ir: np.ndarray
    visible: np.ndarray
    registered: bool


@dataclass(frozen=True)
class FusedFrame:
    """A fused frame with the registered inputs it came from, all the same H and W.

    ``fused`` and ``visible`` are (H, W, 3) RGB uint8; ``ir`` is (H, W) uint8.
    """

    meta: FrameMeta
    fused: np.ndarray
    ir: np.ndarray
    visible: np.ndarray


@dataclass(frozen=True)
class StreamInfo:
    """What the sinks need to know about a stream pair before its first frame."""

    stream: str
    rate: Fraction  # nominal output frame rate (the leader source's)
    time_base: Fraction  # MP4 time base: the leader file's own, so pts stay exact
    expected_frames: int | None  # leader frames in a file, when the container says
    live: bool


@dataclass(frozen=True)
class EndOfStream:
    """Sentinel put on a queue after a stream's (or a camera's) last item."""

    stream: str
    kind: str | None = None  # IR or VISIBLE on a camera's queue; None after pairing
