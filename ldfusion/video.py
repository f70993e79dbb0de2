"""Video I/O: the one reader and the one writer (PyAV), used by every part of ldfusion.

Convention.
- A decoded frame stays in the decoder's own layout: ``Planes``. 8-bit 4:2:0 video
  (``yuv420p``, ``yuvj420p``) is handed out as its three planes without any conversion;
  gray video as its one plane. Other layouts are converted by FFmpeg only when needed:
  to ``yuv420p`` for colour, to gray for luma-only readers (infrared).
- Bit depth: luma deeper than 8 bits (10-bit, 16-bit video) follows the same rule as
  16-bit infrared images (``ldfusion.imageio.infrared_to_unit``), with the stretch limits
  taken from the stream's first frame and then held, so a video does not flicker.
  Deep colour video is reduced to 8 bits by FFmpeg.
- Range: ``Planes.full_range`` tells whether the samples use the full 0..255 range (JPEG;
  gray video; a stretched deep luma) or the limited 16..235 / 16..240 range (MPEG, the
  default of video). The samples are never rescaled here: ``ldfusion.color`` does it on
  the device.
- Timestamps: seconds from the stream's first frame, ``(pts - start) * time_base``; a
  frame without pts, and every frame of a raw elementary stream (``.h264``: no container,
  so no clock), gets ``index / rate``, the rate the bitstream states or else an assumed one.
  Where they jump back by more than two frames (recordings joined end to end), the
  timeline continues one frame after the last.
- Orientation: a video stored turned with a display rotation (as phones record) is turned
  upright, as players show it; the reader's width and height are the upright ones.
- Damaged or cut-off packets are skipped and counted; a stream that ends early ends with
  one warning saying how many frames were read; frames the decoder made from damaged data
  (its errors concealed) are counted and named in one warning at the end. A file that
  cannot be opened, or that holds no decodable frame, is a one-line ``DataError``.

The writer encodes planes as they are (``write_planes``) or RGB/gray arrays
(``write_image``), takes pts from timestamps (strictly increasing), pads odd sizes to
even ones for 4:2:0, and flushes the encoder and closes the file on every exit path.
``fragmented`` writes a fragmented MP4 flushed at every keyframe, so a killed process
leaves a file that plays up to its last complete fragment (one GOP, ``keyint`` frames).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ldfusion.codecs import ENCODERS, EncoderChoice, choose_decoder, choose_encoder
from ldfusion.errors import ConfigError, DataError
from ldfusion.imageio import infrared_to_unit, stretch_limits, unit_to_uint8

log = logging.getLogger(__name__)

DEFAULT_RATE = Fraction(30)
YUV420 = "yuv420p"
GRAY = "gray"
RGB = "rgb24"
BGR = "bgr24"
_AS_IS = ("yuv420p", "yuvj420p")  # layouts handed out untouched
# FFmpeg's demuxers of raw elementary video streams: no timestamps of their own (their
# ``framerate`` option, 25 by default, makes them up).
_RAW_VIDEO_FORMATS = frozenset({"h261", "h263", "h264", "hevc", "vvc", "m4v", "mjpeg", "mjpeg_2000", "cavsvideo", "dirac",
                                "dnxhd", "avs2", "avs3", "vc1", "mpegvideo", "obu", "rawvideo"})
_GRAY_FORMATS = {"gray": 8, "gray10le": 10, "gray12le": 12, "gray16le": 16, "gray10be": 10, "gray12be": 12, "gray16be": 16}

# The matrices ``ldfusion.color`` turns Y, Cb, Cr into RGB with. FFmpeg's AVColorSpace values
# that name one; any other (unspecified above all) is read as BT.601, as FFmpeg's own
# converter reads it.
BT601, BT709, BT2020 = "bt601", "bt709", "bt2020"
_MATRICES = {1: BT709, 9: BT2020, 10: BT2020}
_UNSPECIFIED = 2  # FFmpeg's value for a colour space, primaries or transfer the file does not state
BT601_SPACE = 6  # AVCOL_SPC_SMPTE170M: the BT.601 matrix, stated for pictures converted from RGB


@dataclass(frozen=True)
class ColourTags:
    """What a video states of its colour: FFmpeg's AVColorSpace (the matrix), AVColorPrimaries
    and AVColorTransferCharacteristic values. A video made from it is tagged the same, so a
    player shows it as it shows the source (an untagged BT.709 video plays as BT.601: greens
    a tenth too bright)."""

    space: int = _UNSPECIFIED
    primaries: int = _UNSPECIFIED
    transfer: int = _UNSPECIFIED

    @property
    def matrix(self) -> str:
        return _matrix_of(self.space)

    @classmethod
    def of_stream(cls, context) -> "ColourTags":
        """The tags of the planes a reader hands out: the stream's own, with the matrix BT.601
        where FFmpeg converts RGB-like pictures (the stream's space then says RGB), by the
        reader's own rule (``_planes``: neither Y, Cb, Cr nor gray)."""
        layout = context.format
        space = int(context.colorspace)
        if layout is not None and not _is_yuv(layout) and layout.name not in _GRAY_FORMATS:
            space = BT601_SPACE
        return cls(space, int(context.color_primaries), int(context.color_trc))


def _matrix_of(space: int) -> str:
    return _MATRICES.get(space, BT601)


@dataclass(frozen=True)
class Planes:
    """One frame's pixels in the layout they came in; nothing is converted on the host.

    ``layout``: ``yuv420p`` (``data`` = Y (H, W), U and V (ceil(H/2), ceil(W/2))),
    ``gray`` (Y only), ``rgb24`` or ``bgr24`` (one (H, W, 3) array). All uint8.
    """

    layout: str
    data: tuple[np.ndarray, ...]
    full_range: bool = True
    matrix: str = BT601  # of Y, Cb, Cr (``yuv420p``): how they become RGB

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.data[0].shape[1], self.data[0].shape[0]

    def turned(self, quarter_turns: int) -> "Planes":
        """Every plane turned counterclockwise by ``quarter_turns`` x 90 degrees (a copy)."""
        planes = tuple(np.ascontiguousarray(np.rot90(plane, quarter_turns)) for plane in self.data)
        return Planes(self.layout, planes, self.full_range, self.matrix)

    @classmethod
    def gray(cls, y: np.ndarray, full_range: bool = True) -> "Planes":
        return cls(GRAY, (np.ascontiguousarray(y),), full_range)

    @classmethod
    def packed(cls, image: np.ndarray, bgr: bool = False) -> "Planes":
        """An (H, W, 3) RGB (or BGR) or (H, W) gray uint8 image."""
        if image.ndim == 2:
            return cls.gray(image)
        return cls(BGR if bgr else RGB, (np.ascontiguousarray(image),), True)


@dataclass(frozen=True)
class DecodedFrame:
    index: int  # position in the file, from 0
    t: float  # seconds from the first frame (see the module docstring)
    planes: Planes
    pts: int | None = None  # the container's own timestamp, in ``VideoReader.time_base`` units
    key: bool = False  # a keyframe (coded on its own): the encoder's rhythm, for signals that must not follow it


def ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's own words, without the errno and path PyAV wraps them in."""
    return getattr(exc, "strerror", None) or str(exc)


class VideoReader:
    """Frames of a video file's main video stream as ``DecodedFrame``s.

    ``luma_only``: hand out the Y plane alone (infrared). ``unstated_rate``: the rate of a
    video that states none (raw MJPEG), else DEFAULT_RATE with a warning. ``threads``: FFmpeg's decoding
    threads (None: its own choice, about one per core; see ``ldfusion.threads.decoder_threads``
    for readers that run side by side). ``ir_16bit``: the deep-luma rule
    (``stretch`` or ``scale``, as for 16-bit infrared images). ``decode``: ``cpu`` (default),
    ``cuda`` or ``auto`` (a video source's ``decode`` key), resolved by
    ``ldfusion.codecs.choose_decoder`` for the file's codec: ``cuda`` is NVDEC when it opens,
    else the CPU with one warning; ``auto`` and ``cpu`` are the CPU decoder. NVDEC frames
    come back as ``nv12`` and are read like any other layout. Use as a context manager, or
    call ``close``.
    """

    def __init__(
        self, path: str | os.PathLike, luma_only: bool = False, max_frames: int | None = None, ir_16bit: str = "stretch",
        decode: str = "cpu", threads: int | None = None, unstated_rate: float | None = None,
    ):
        self.path = Path(path)
        if not self.path.is_file():  # a folder "was not found" though it is there
            raise DataError(f"{self.path} is a folder, not a video" if self.path.is_dir() else f"video not found: {self.path}")
        self._container = self._open_input()
        self.decoder = "cpu"
        if decode != "cpu":  # NVDEC needs the stream's codec, known only once the file is open
            choice = choose_decoder(decode, _main_video_stream(self._container, self.path, warn=False).codec_context.name)
            if choice.hwaccel is not None:
                self._container.close()
                self._container = self._open_input(**choice.open_options)
                self.decoder = choice.device
        self._stream = _main_video_stream(self._container, self.path)
        self._stream.thread_type = "AUTO"  # frame-parallel decoding
        if threads is not None:
            self._stream.codec_context.thread_count = max(1, threads)  # read when the decoder opens, at the first packet
        self._luma_only = luma_only
        self._max_frames = max_frames
        self._ir_16bit = ir_16bit
        self._limits: tuple[float, float] | None = None  # deep-luma stretch, from the first frame
        self._origin = self._stream.start_time
        self._last_t = -math.inf  # the last frame's timestamp, seconds
        self._continued_s = 0.0  # added to the file's own times after backward jumps (``_continue_after_reset``)
        # A raw elementary stream (.h264, .mjpeg, ...) has no container clock: FFmpeg's demuxer
        # stamps it at an assumed 25 fps. Its rate is the one the bitstream states (H.264/HEVC
        # timing info), else unknown, and its frames are timed by count at that rate.
        self._raw = bool(set(self._container.format.name.split(",")) & _RAW_VIDEO_FORMATS)
        stated = self._stream.codec_context.framerate if self._raw else self._stream.average_rate or self._stream.guessed_rate
        self.rate_stated = bool(stated)
        self.rate: Fraction = Fraction(stated) if stated else self._assumed_rate(unstated_rate)
        self._frame_s = 1.0 / float(self.rate)  # a float: Fraction arithmetic a frame costs the reader thread
        self.time_base: Fraction = self._stream.time_base or Fraction(1, 90000)
        self.declared_frames: int | None = self._stream.frames or None
        self._quarter_turns = round(_display_rotation(self.path) / 90) % 4  # counterclockwise, to show it upright
        self.width, self.height = self._stream.codec_context.width, self._stream.codec_context.height
        if self._quarter_turns:
            log.info("%s is stored turned (display rotation %d degrees): its frames are turned upright, as players show them",
                     self.path, 90 * self._quarter_turns)
            if self._quarter_turns % 2:
                self.width, self.height = self.height, self.width
        self.codec = self._stream.codec_context.name
        self.colour = ColourTags.of_stream(self._stream.codec_context)
        self.frames_read = 0
        self.damaged = 0  # packets the decoder refused, skipped
        self.concealed = 0  # frames the decoder made from damaged data, its errors concealed (FFmpeg's "corrupt" flag)

    def _assumed_rate(self, given: float | None) -> Fraction:
        """The rate of a video that states none (raw MJPEG): the caller's, or DEFAULT_RATE with a warning."""
        if given is not None:
            return Fraction(given).limit_denominator(1001)
        log.warning("%s does not state its frame rate; assuming %s fps (a source's fps: sets it)", self.path, DEFAULT_RATE)
        return DEFAULT_RATE

    def _open_input(self, **options) -> av.container.InputContainer:
        try:
            container = av.open(str(self.path), **options)
        except av.FFmpegError as exc:
            raise DataError(f"cannot read video {self.path}: {ffmpeg_reason(exc)} (corrupt, truncated or not a video)") from None
        except UnicodeDecodeError:  # PyAV reads the container's metadata as UTF-8
            raise DataError(f"cannot read video {self.path}: its metadata is not text (corrupt, or not a video)") from None
        if not container.streams.video:
            container.close()
            raise DataError(f"{self.path} holds no video stream")
        if all(stream.codec_context is None for stream in container.streams.video):
            container.close()
            raise DataError(f"{self.path} holds no video stream FFmpeg can decode (an unknown or damaged codec)")
        return container

    @property
    def expected_frames(self) -> int | None:
        """Frames this reader will hand out, when the container says (and ``max_frames`` caps)."""
        declared, cap = self.declared_frames, self._max_frames
        return min(declared, cap) if declared and cap else declared or cap

    def __iter__(self) -> Iterator[DecodedFrame]:
        reason = ""
        try:
            for packet in self._container.demux(self._stream):
                try:
                    decoded = packet.decode()
                except av.FFmpegError as exc:  # a damaged or cut-off packet: skip it, keep going
                    self.damaged, reason = self.damaged + 1, ffmpeg_reason(exc)
                    continue
                for frame in decoded:
                    if self._max_frames is not None and self.frames_read >= self._max_frames:
                        return
                    self.concealed += frame.is_corrupt
                    planes = self._planes(frame)
                    if self._quarter_turns:
                        planes = planes.turned(self._quarter_turns)
                    yield DecodedFrame(self.frames_read, self._timestamp(frame), planes, frame.pts, bool(frame.key_frame))
                    self.frames_read += 1
        except av.FFmpegError as exc:  # the container itself ends mid-packet
            self.damaged, reason = self.damaged + 1, ffmpeg_reason(exc)
        if self.frames_read == 0:
            raise DataError(f"no decodable video frames in {self.path}" + (f" ({reason})" if reason else ""))
        self._report_damage(reason)

    def images(self) -> Iterator[np.ndarray]:
        """The frames as host arrays, for consumers that need RGB: (H, W, 3) RGB uint8, or
        (H, W) uint8 luma (full range) for a luma-only reader. Converted by ``ldfusion.color``."""
        from ldfusion.color import planes_to_image  # late: color imports torch

        for frame in self:
            yield planes_to_image(frame.planes)

    def _timestamp(self, frame: av.VideoFrame) -> float:
        if frame.pts is None or self._raw:
            return float(self.frames_read / self.rate)
        if self._origin is None:
            self._origin = frame.pts
        # Integer ticks over the denominator: one correctly rounded division, the value a
        # Fraction product would round to, without building Fractions for every frame
        # (0.04 ms a frame, a tenth of a reader thread's time at 640x512).
        t = (frame.pts - self._origin) * self.time_base.numerator / self.time_base.denominator + self._continued_s
        return self._continue_after_reset(t) if t < self._last_t - 2.0 * self._frame_s else self._note(t)

    def _continue_after_reset(self, t: float) -> float:
        """Timestamps that jump back by more than two frames: recordings joined end to end (MPEG-TS
        files concatenated, a camera restarted mid-file). Frames come out of the decoder in
        presentation order, so the file's own timeline restarted here; it is continued one frame
        after the last, instead of every later frame going back in time (and being skipped)."""
        jump = self._last_t + self._frame_s - t
        log.info("%s: timestamps jump back %.2f s at frame %d (recordings joined end to end?); the timeline "
                 "continues from the frame before", self.path, self._last_t - t, self.frames_read)
        self._continued_s += jump
        return self._note(t + jump)

    def _note(self, t: float) -> float:
        self._last_t = t
        return t

    def _planes(self, frame: av.VideoFrame) -> Planes:
        name = frame.format.name
        if self._luma_only:
            return self._luma(frame, name)
        if name in _AS_IS:
            return Planes(YUV420, tuple(_plane(frame, i) for i in range(3)), _full_range(frame), _matrix(frame))
        if name == "gray":
            return Planes.gray(_plane(frame, 0))
        # Named ranges both ways: left unnamed, FFmpeg kept the full range of some sources
        # (MJPEG's yuvj422p, RGB tagged full) in planes labelled limited, and the colour came
        # out ~14 % oversaturated. Full-range and RGB sources stay full, limited ones limited.
        rgb = _luma_bits(frame) is None
        full = _full_range(frame) or rgb
        colour_range = "JPEG" if full else "MPEG"
        converted = frame.reformat(format=YUV420, src_color_range=colour_range, dst_color_range=colour_range)
        # Y, Cb, Cr keep their matrix through FFmpeg's layout change; RGB gets FFmpeg's BT.601.
        return Planes(YUV420, tuple(_plane(converted, i) for i in range(3)), full, BT601 if rgb else _matrix(frame))

    def _luma(self, frame: av.VideoFrame, name: str) -> Planes:
        """The Y plane alone: 8-bit as it is, deeper by the infrared rule (then full range)."""
        bits = _GRAY_FORMATS.get(name) or _luma_bits(frame)
        full = name in _GRAY_FORMATS or _full_range(frame)
        if bits is None:  # packed RGB-like layouts: FFmpeg computes the luma, full range
            deep = max(c.bits for c in frame.format.components) > 8
            frame = frame.reformat(format="gray16le" if deep else "gray")
            name, bits, full = frame.format.name, 16 if deep else 8, True
        if bits == 8:
            return Planes.gray(_plane(frame, 0), full)
        luma = _plane(frame, 0, np.dtype(">u2" if name.endswith("be") else "<u2")).astype(np.uint16, copy=False)
        if self._limits is None and self._ir_16bit == "stretch":
            limits = stretch_limits(luma)
            # A flat frame (a thermal camera's shutter frame, often the first) has no range to
            # stretch: the first frame with one sets the limits for the rest of the clip.
            if limits[1] > limits[0]:
                self._limits = limits
        unit = infrared_to_unit(luma, self._ir_16bit, source=str(self.path), bits=bits, limits=self._limits)
        return Planes.gray(unit_to_uint8(unit), full_range=True)

    def _report_damage(self, reason: str) -> None:
        if self.concealed:
            log.warning("%s holds damaged data: %d frame(s) decoded with errors the decoder concealed (they and the frames "
                        "that follow them may show it)", self.path, self.concealed)
        expected = self.declared_frames
        short = expected is not None and self.frames_read < expected and (self._max_frames is None or self.frames_read < self._max_frames)
        if self.damaged or short:
            of = f" of {expected}" if expected else ""
            why = f"; {self.damaged} damaged packet(s) skipped ({reason})" if self.damaged else ""
            log.warning("%s is truncated or damaged: read %d%s frame(s)%s; its stream ends here", self.path, self.frames_read, of, why)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _plane(frame: av.VideoFrame, index: int, dtype: np.dtype = np.dtype(np.uint8)) -> np.ndarray:
    """Plane ``index`` as an (h, w) view of the frame's own buffer (rows ``line_size`` apart).

    No copy: the array holds the plane and the plane its frame, and FFmpeg's frame buffers
    are reference-counted, so the decoder takes a fresh buffer while this one lives (tested:
    planes kept past later frames and past closing the file stay intact). The copy held the
    GIL in the reader threads, a tenth of the pipeline's GIL time at 640x512.
    """
    plane = frame.planes[index]
    rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // dtype.itemsize)
    return rows[:, : plane.width]


def _display_rotation(path: Path) -> int:
    """Degrees counterclockwise that a player turns the video by (its display matrix, as phones
    write it), from the first frame: FFmpeg hands it over with frames, not before. 0 when unknown."""
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(_main_video_stream(container, path, warn=False)):
                return int(frame.rotation)
    except (av.FFmpegError, ValueError, UnicodeDecodeError):  # the reader itself reports a damaged file
        pass
    return 0


def _main_video_stream(container: av.container.InputContainer, path: Path, warn: bool = True) -> av.video.stream.VideoStream:
    """The video stream ffmpeg's own tools would pick: the largest picture, cover art left out.
    With several, a warning names the choice (a first, smaller stream was used silently).
    Streams of a codec FFmpeg cannot decode (no codec context) are no candidates."""
    decodable = [s for s in container.streams.video if s.codec_context is not None]  # never empty after ``_open_input``
    streams = [s for s in decodable if not s.disposition & av.stream.Disposition.attached_pic] or decodable
    chosen = max(streams, key=lambda s: (s.codec_context.width or 0) * (s.codec_context.height or 0))  # the first of equals
    if warn and len(streams) > 1:
        log.warning("%s holds %d video streams; using stream %d (%dx%d), the largest", path, len(streams), chosen.index,
                    chosen.codec_context.width, chosen.codec_context.height)
    return chosen


def _luma_bits(frame: av.VideoFrame) -> int | None:
    """Bit depth of a planar YUV frame's luma; None for packed RGB-like layouts."""
    return frame.format.components[0].bits if _is_yuv(frame.format) else None


def _is_yuv(layout: av.VideoFormat) -> bool:
    """A planar Y, Cb, Cr layout with luma in its first plane."""
    return layout.name.startswith(("yuv", "nv", "p0", "p2")) and layout.components[0].plane == 0


def _matrix(frame: av.VideoFrame) -> str:
    return _matrix_of(int(frame.colorspace))


def _full_range(frame: av.VideoFrame) -> bool:
    """Full-range samples: tagged so (AVCOL_RANGE_JPEG), or a ``yuvj`` layout, full range by name."""
    return getattr(frame, "color_range", 0) == 2 or frame.format.name.startswith("yuvj")


# --- writing ---------------------------------------------------------------------------------


class VideoWriter:
    """One video file (H.264 in MP4 by default), opened at the first frame, when its size is known.

    ``codec``: ``auto``, ``libx264`` or ``h264_nvenc`` (the MP4 sink's ``encoder``) is resolved at
    the first frame by ``ldfusion.codecs.choose_encoder`` (NVENC when it opens, else libx264 with
    one log line; ``crf``/``preset`` translated for NVENC); any other FFmpeg encoder name is
    used as given. ``time_base``: the clock of the timestamps given to ``write_*`` (the input file's own, so
    pts stay exact); ``keyint``: frames per GOP (None: one second when ``fragmented``, else
    the encoder's default). Use as a context manager: the encoder is flushed on every exit.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        rate: Fraction | float = DEFAULT_RATE,
        time_base: Fraction | None = None,
        codec: str = "libx264",
        crf: int | None = 18,
        preset: str | None = "veryfast",
        keyint: int | None = None,
        fragmented: bool = False,
        options: dict[str, str] | None = None,
        container_options: dict[str, str] | None = None,
        pixel_format: str = YUV420,
        colour: ColourTags | None = None,
    ) -> None:
        self.path = Path(path)
        self.colour = colour  # stated in the file, for planes written as they are (write_planes)
        self.rate = Fraction(rate).limit_denominator(1001)
        self.time_base = time_base or 1 / self.rate
        self.codec = codec  # an H.264 preference (auto, libx264, h264_nvenc) until the first frame resolves it
        self.hardware = False  # whether the encoder resolved to NVENC
        self._crf, self._preset = crf, preset
        self.keyint = keyint if keyint is not None else (max(1, round(self.rate)) if fragmented else None)
        if self.keyint is not None and self.keyint < 1:
            raise ConfigError(f"keyint must be at least 1; got {keyint}")
        self.fragmented = fragmented
        self.pixel_format = pixel_format  # what the encoder stores: yuv420p, or e.g. gray16le for lossless ffv1
        self._container_options = dict(container_options or {})
        if fragmented:  # a fragment per keyframe, each written out at once
            self._container_options.update({"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"})
        self._options = dict(options or {})  # the encoder's, on top of the quality settings of an H.264 choice
        self._container = None
        self._stream = None
        self._origin: float | None = None
        self._last_pts = -1
        self.frames = 0

    def _open(self, width: int, height: int, colour: ColourTags | None = None) -> None:
        self._resolve_codec(width, height)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.path), "w", options=self._container_options)
        except (av.FFmpegError, OSError) as exc:
            raise DataError(f"cannot create {self.path}: {ffmpeg_reason(exc)}") from None
        try:
            stream = self._container.add_stream(self.codec, rate=self.rate, options=self._options)
            stream.width, stream.height = _even(width), _even(height)
            stream.pix_fmt = self.pixel_format
            stream.codec_context.time_base = self.time_base
            if self.keyint is not None:
                stream.codec_context.gop_size = self.keyint
            if colour is not None:
                _state_colour(stream.codec_context, colour)
        except (av.FFmpegError, ValueError, OverflowError) as exc:  # OverflowError: a value beyond FFmpeg's C int
            self._container.close()
            self._container = None
            raise ConfigError(f"cannot set up {self.codec} encoding for {self.path}: {exc}") from None
        self._stream = stream
        if width % 2 or height % 2:
            log.info("%s: %dx%d is padded to even sides for yuv420p", self.path, width, height)

    def _resolve_codec(self, width: int, height: int) -> None:
        """An H.264 preference becomes the encoder that opens at this size (``h264_encoder``);
        other codec names (mpeg4, ffv1) are used as given."""
        choice = h264_encoder(self.codec, width, height, self._crf, self._preset)
        if choice is not None:
            self.codec, self.hardware = choice.name, choice.hardware
            self._options = {**choice.options, **self._options}

    def write_planes(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, t: float | None = None) -> None:
        """Limited-range 4:2:0 planes: Y (H, W), U and V (ceil(H/2), ceil(W/2)). uint8 for
        ``yuv420p``; uint16 samples as they are for a deeper stored 4:2:0 format
        (``pixel_format="yuv420p10le"``: exact 10-bit samples, e.g. a test clip)."""
        height, width = y.shape
        layout = YUV420
        if y.dtype == np.uint16:
            if not self.pixel_format.startswith(YUV420) or self.pixel_format == YUV420:
                raise ValueError(f"{self.path}: uint16 planes need a deep 4:2:0 pixel_format such as yuv420p10le; this writer stores {self.pixel_format}")
            layout = self.pixel_format
        if self._container is None:
            self._open(width, height, self.colour)
        frame = av.VideoFrame(_even(width), _even(height), layout)
        for index, plane in enumerate((_pad_to_even(y), u, v)):
            _fill_plane(frame.planes[index], plane)
        self._encode(frame, t)

    def write_image(self, image: np.ndarray, t: float | None = None) -> None:
        """An (H, W, 3) RGB uint8, (H, W) gray uint8 or (H, W) gray uint16 image; FFmpeg converts it
        to the stored pixel format (yuv420p: BT.601, limited range)."""
        if self._container is None:
            self._open(image.shape[1], image.shape[0])
        layout = RGB if image.ndim == 3 else "gray16le" if image.dtype == np.uint16 else GRAY
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(_pad_to_even(image)), format=layout)
        self._encode(frame, t)

    def _encode(self, frame: av.VideoFrame, t: float | None) -> None:
        if t is None:
            pts = self._last_pts + 1
        else:
            if self._origin is None:
                self._origin = t  # the file starts at pts 0
            pts = max(round((t - self._origin) / self.time_base), self._last_pts + 1)  # strictly increasing
        frame.pts, frame.time_base = pts, self.time_base
        try:
            self._container.mux(self._stream.encode(frame))
        except (av.FFmpegError, OSError) as exc:  # e.g. the disk is full
            raise DataError(f"cannot write {self.path}: {ffmpeg_reason(exc)}{self._what_remains()}") from None
        self._last_pts = pts
        self.frames += 1

    def _what_remains(self) -> str:
        if self.fragmented:
            return "; the file plays up to its last complete fragment"
        return "; a plain MP4 cannot be finished without space (use fragmented: true to keep what was written)"

    def close(self) -> None:
        """Flush the encoder and write the index; runs on every exit path."""
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            container.mux(self._stream.encode(None))
        except (av.FFmpegError, OSError) as exc:
            container.close()
            raise DataError(f"cannot finish {self.path}: {ffmpeg_reason(exc)}{self._what_remains()}") from None
        try:
            container.close()
        except (av.FFmpegError, OSError) as exc:
            raise DataError(f"cannot finish {self.path}: {ffmpeg_reason(exc)}{self._what_remains()}") from None
        log.debug("wrote %d frame(s) to %s", self.frames, self.path)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _fill_plane(plane, array: np.ndarray) -> None:
    """Copy a compact (h, w) array (uint8, or uint16 for deep formats) into a frame plane whose rows may be padded."""
    rows = np.frombuffer(plane, array.dtype).reshape(plane.height, plane.line_size // array.itemsize)
    rows[: array.shape[0], : array.shape[1]] = array


def h264_encoder(codec: str, width: int, height: int, crf: int | None = None, preset: str | None = None) -> EncoderChoice | None:
    """The encoder an H.264 preference (``auto``, ``libx264``, ``h264_nvenc``) takes for frames
    of this size: NVENC when asked for and working, else libx264, with one log line
    (``ldfusion.codecs.choose_encoder``); None for other codec names. Resolved once per process
    and size, so calling it before the first frame (``Mp4Sink.prepare``) takes the probe out of
    the first frame's time."""
    if codec not in ENCODERS:
        return None
    crf = 18 if crf is None else crf
    preset = "veryfast" if preset is None else preset
    return choose_encoder(codec, _even(width), _even(height), crf, preset)


def _state_colour(context, colour: ColourTags) -> None:
    """The source's colour tags on the encoder (it writes them into the stream), and the
    limited range that ``write_planes`` takes."""
    context.colorspace, context.color_primaries, context.color_trc = colour.space, colour.primaries, colour.transfer
    context.color_range = 1  # MPEG (limited)


def _even(n: int) -> int:
    return n + (n % 2)


def _pad_to_even(image: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: repeat the last row/column when one is odd."""
    pad_h, pad_w = image.shape[0] % 2, image.shape[1] % 2
    if not (pad_h or pad_w):
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w)) + ((0, 0),) * (image.ndim - 2), mode="edge")


def probe_frames(path: str | os.PathLike) -> tuple[int, Fraction, list[float]]:
    """(frames decoded, the stream's stated rate, their timestamps): for checks and tests."""
    with VideoReader(path, luma_only=True) as reader:
        times = [frame.t for frame in reader]
        return len(times), reader.rate, times
