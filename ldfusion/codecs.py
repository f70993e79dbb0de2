"""Which H.264 encoder and which decoder a run uses.

``encoder: auto|libx264|h264_nvenc`` and ``decode: auto|cpu|cuda`` are resolved once, at
start. A hardware codec is chosen by asking PyAV's FFmpeg what it has *and* opening it: a
codec that is compiled in is not one that works. PyAV's wheels ship ``h264_nvenc`` and the
``cuda`` hwaccel on every machine; they load ``libcuda.so.1`` / ``libnvidia-encode.so.1``
from the driver at open time and fail there when the driver or the hardware unit is
missing. A hardware codec that does not open falls back to the CPU codec with one warning
that quotes FFmpeg's reason; the encoder's ``auto`` (NVENC when it opens) falls back
quietly (one info line), since the CPU codec is a correct answer. The decoder's ``auto`` is
the CPU decoder (measured faster; below).

Why ``h264_nvenc`` fails on an H100 / H200: they have no NVENC engine. Confirmed on an
H200 on 2026-11-27 (scripts/codec_probe.py, FFmpeg's own log): "OpenEncodeSessionEx failed:
unsupported device (2): (no details); No capable devices found", which PyAV reports as
"Generic error in an external library". Hopper data-centre GPUs (GH100), like the A100
(GA100) before them, have NVDEC decoders and NVJPG but no NVENC: NVIDIA's NVENC capability
tables list Maxwell to Ampere (GA10x), Ada and Blackwell, and no Hopper column, while the
driver still installs ``libnvidia-encode``, so FFmpeg loads it and the session is refused.
Other causes give other errors, and the probe reports them the same way: a driver older
than the bundled FFmpeg's nv-codec-headers ("Driver does not support the required nvenc
API version"), no driver ("Cannot load libcuda.so.1"), a size outside the encoder's
limits. So the probe opens the encoder at the stream's own size and encodes one frame
(some failures appear only on the first frame). NVENC needs an NVENC-equipped card (L4,
L40S, A10, RTX); on an H100 / H200 the MP4 sinks encode with libx264 on the CPU cores.

Decoding: ``auto`` is the CPU decoder, ``cuda`` asks for NVDEC. Measured on an H200 with 16
cores (2026-11-27, scripts/codec_probe.py, the M3SVD 640x480 MPEG-4 clip): the CPU decoder
ran at 7553 fps, NVDEC through PyAV's ``cuda`` hwaccel at 889 fps. PyAV hands every NVDEC
frame back to host memory (a download and a wait per frame) as ``nv12``, which the reader
then converts to ``yuv420p``; in the pipeline that made the visible reader the bottleneck
(py-spy: busy 90% of the run, 39% of it in that conversion) and held the whole pipeline at
~230 fps at 640x512. NVDEC pays only when frames stay on the device (NVIDIA's
PyNvVideoCodec hands out device surfaces for DLPack; PyAV 18's ``HWAccel(is_hw_owned=True)``
is the step to try first) or when the CPU has too few cores for the streams; ``cuda`` is
there for that case, through the same ``av.open`` as every other reader (``open_options``),
so demuxing, timestamps and damaged-packet handling stay in one place.

Where it is used: ``VideoWriter(codec=sink.encoder)`` and ``VideoReader(decode=source.decode)``
in ldfusion/video.py (the MP4 sink and video sources pass their keys), which do::

    # writer, when it knows the frame size (even width and height, yuv420p)
    choice = choose_encoder(sink.encoder, width, height, crf=sink.crf, preset=sink.preset)
    stream = container.add_stream(choice.name, rate=rate, options=dict(choice.options))

    # reader; NVDEC frames arrive as nv12 (planes[0] Y, planes[1] interleaved U/V)
    container = av.open(path, **choose_decoder(source.decode).open_options)
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from types import MappingProxyType

import av
import av.logging
import numpy as np
from av.codec.hwaccel import HWAccel

from ldfusion.errors import ConfigError

log = logging.getLogger(__name__)

ENCODERS = ("auto", "libx264", "h264_nvenc")
DECODES = ("auto", "cpu", "cuda")
CPU_ENCODER = "libx264"
HARDWARE_ENCODER = "h264_nvenc"

# Codecs NVDEC decodes on Turing and newer (NVIDIA's NVDEC application note); others stay on the CPU.
NVDEC_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg1video", "mpeg2video", "mpeg4", "vc1", "mjpeg"})

# x264's speed presets onto NVENC's p1 (fastest) .. p7 (best), by the trade-off each one names.
NVENC_PRESETS = {
    "ultrafast": "p1",
    "superfast": "p1",
    "veryfast": "p2",
    "faster": "p3",
    "fast": "p4",
    "medium": "p5",
    "slow": "p6",
    "slower": "p7",
    "veryslow": "p7",
    "placebo": "p7",
}


@dataclass(frozen=True)
class EncoderChoice:
    """An encoder that opened at the stream's size, with the options to open it with."""

    name: str  # FFmpeg encoder name for ``OutputContainer.add_stream``
    options: Mapping[str, str] = field(default_factory=dict)  # codec options (read-only)
    hardware: bool = False


@dataclass(frozen=True)
class DecoderChoice:
    """Where a video stream decodes; ``open_options`` go to ``av.open``."""

    device: str  # "cpu" or "cuda"
    hwaccel: HWAccel | None = None

    @property
    def open_options(self) -> dict:
        """Keyword arguments for ``av.open``: ``{}`` on the CPU, ``{"hwaccel": ...}`` for NVDEC.

        NVDEC frames come back downloaded to host memory as ``nv12`` (Y plane, then
        interleaved U/V at half resolution), not ``yuv420p``.
        """
        return {} if self.hwaccel is None else {"hwaccel": self.hwaccel}


def check_encoder_name(preference: str) -> None:
    if preference not in ENCODERS:
        raise ConfigError(f"encoder must be one of {', '.join(ENCODERS)}; got {preference!r}")


def check_decode_name(preference: str) -> None:
    if preference not in DECODES:
        raise ConfigError(f"decode must be one of {', '.join(DECODES)}; got {preference!r}")


def encoder_options(name: str, crf: int, preset: str) -> dict[str, str]:
    """The sink's quality settings (x264 ``crf`` 0..51 and speed ``preset``) for encoder ``name``.

    NVENC has no CRF; its constant-quality mode (``rc=vbr``, ``cq``, no bitrate cap) is the
    counterpart, on the same 0..51 quantiser scale.
    """
    if name == CPU_ENCODER:
        return {"crf": str(crf), "preset": preset}
    if name == HARDWARE_ENCODER:
        if preset not in NVENC_PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(NVENC_PRESETS)}; got {preset!r}")
        # cq 0 would mean "let NVENC choose"; the closest to x264's lossless end is 1.
        return {"preset": NVENC_PRESETS[preset], "rc": "vbr", "cq": str(max(crf, 1)), "b": "0"}
    raise ConfigError(f"encoder must be one of {', '.join(ENCODERS[1:])}; got {name!r}")


def _one_at_a_time(cached: Callable) -> Callable:
    """Serialise a cached choice: the MP4 sinks of several streams open their writers on
    their own threads, and two probes at once would each log the fallback (the choice must
    log once) and interleave ``_ffmpeg_log``'s save and restore of FFmpeg's global log level,
    leaving FFmpeg's log switched on for the rest of the process."""
    lock = threading.Lock()

    @functools.wraps(cached)
    def choose(*args, **kwargs):
        with lock:
            return cached(*args, **kwargs)

    choose.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return choose


@_one_at_a_time
@cache
def choose_encoder(preference: str, width: int, height: int, crf: int = 18, preset: str = "veryfast") -> EncoderChoice:
    """The encoder a ``width`` x ``height`` yuv420p stream uses, resolved once per process.

    ``auto`` takes ``h264_nvenc`` when it opens, else libx264 (one info line);
    ``h264_nvenc`` that does not open falls back to libx264 with one warning naming
    FFmpeg's reason; libx264 that does not open is a ``ConfigError``. Cached, so the MP4
    sinks of several streams probe and log once.
    """
    check_encoder_name(preference)
    if preference in ("auto", HARDWARE_ENCODER):
        options = encoder_options(HARDWARE_ENCODER, crf, preset)
        problem = encoder_problem(HARDWARE_ENCODER, width, height, options)
        if problem is None:
            log.info("encoder: %s (NVENC) at %dx%d", HARDWARE_ENCODER, width, height)
            return EncoderChoice(HARDWARE_ENCODER, MappingProxyType(options), hardware=True)
        report = log.info if preference == "auto" else log.warning
        report("encoder: %s does not open (%s); using %s on the CPU", HARDWARE_ENCODER, problem, CPU_ENCODER)
    options = encoder_options(CPU_ENCODER, crf, preset)
    problem = encoder_problem(CPU_ENCODER, width, height, options)
    if problem is not None:
        raise ConfigError(f"encoder {CPU_ENCODER} cannot encode {width}x{height}: {problem}")
    return EncoderChoice(CPU_ENCODER, MappingProxyType(options))


def encoder_problem(name: str, width: int, height: int, options: Mapping[str, str]) -> str | None:
    """Why encoder ``name`` cannot encode ``width`` x ``height`` yuv420p here, or None when it can.

    Opens the encoder and encodes one black frame, as the writer will; FFmpeg's own log
    is captured so the answer names the cause, not just the errno.
    """
    try:
        av.codec.Codec(name, "w")
    except av.codec.codec.UnknownCodecError:
        return "not in this PyAV build"
    with _ffmpeg_log() as captured:
        try:
            context = av.codec.CodecContext.create(name, "w")
            context.width, context.height, context.pix_fmt = width, height, "yuv420p"
            context.time_base = Fraction(1, 30)
            context.options = dict(options)
            context.open()
            frame = av.VideoFrame.from_ndarray(np.zeros((height * 3 // 2, width), np.uint8), format="yuv420p")
            frame.pts = 0
            context.encode(frame)
            context.encode(None)
        except (av.FFmpegError, ValueError) as exc:
            return _reason(exc, captured)
    return None


@_one_at_a_time
@cache
def choose_decoder(preference: str, codec_name: str | None = None) -> DecoderChoice:
    """Where a ``codec_name`` stream decodes: NVDEC when ``cuda`` is asked for and it opens,
    else the CPU (``auto`` and ``cpu``: the CPU decoder was 8.5x NVDEC's speed through PyAV
    on an H200; see the module docstring).

    ``cuda`` that cannot be used (no GPU, no driver, a codec NVDEC lacks) falls back to the
    CPU with one warning. ``codec_name`` None (the reader has not opened the file yet)
    probes NVDEC with H.264; a file in a codec NVDEC lacks then decodes in software through
    the hwaccel's fallback. Cached per (preference, codec), so a pipeline's sources probe
    and log once.
    """
    check_decode_name(preference)
    codec_name = codec_name or "h264"
    if preference != "cuda":
        return DecoderChoice("cpu")
    problem = decoder_problem(codec_name)
    if problem is None:
        log.info("decode: %s on NVDEC (PyAV cuda hwaccel)", codec_name)
        return DecoderChoice("cuda", nvdec_hwaccel())
    log.warning("decode: NVDEC cannot decode %s (%s); decoding on the CPU", codec_name, problem)
    return DecoderChoice("cpu")


def nvdec_hwaccel() -> HWAccel:
    # Software fallback on: a stream NVDEC rejects mid-file (an odd profile) still decodes.
    return HWAccel("cuda", allow_software_fallback=True)


def decoder_problem(codec_name: str) -> str | None:
    """Why NVDEC cannot decode ``codec_name`` here, or None when a CUDA decoder opens for it."""
    if codec_name not in NVDEC_CODECS:
        return "not a codec NVDEC decodes"
    if "cuda" not in av.codec.hwaccel.hwdevices_available():
        return "this PyAV build has no cuda hwaccel"
    with _ffmpeg_log() as captured:
        try:
            # Creating the context creates the CUDA device: this is where a missing driver fails.
            context = av.codec.CodecContext.create(codec_name, "r", hwaccel=HWAccel("cuda", allow_software_fallback=False))
            context.open()
        except (av.FFmpegError, ValueError) as exc:
            return _reason(exc, captured)
    return None


class _ffmpeg_log:
    """FFmpeg's log lines while a probe runs (PyAV keeps FFmpeg silent by default).

    The level is process-wide: one probe at a time (``_PROBE_LOCK``), so the level saved is
    never another probe's VERBOSE."""

    def __enter__(self) -> list:
        _PROBE_LOCK.acquire()
        self._level = av.logging.get_level()
        av.logging.set_level(av.logging.VERBOSE)
        self._capture = av.logging.Capture()
        return self._capture.__enter__()

    def __exit__(self, *exc_info) -> None:
        try:
            self._capture.__exit__(*exc_info)
            av.logging.set_level(self._level)
        finally:
            _PROBE_LOCK.release()


_PROBE_LOCK = threading.Lock()


def _reason(exc: BaseException, captured: list) -> str:
    """FFmpeg's error lines from the probe (they name the cause), else the exception's text."""
    errors = [message.strip() for level, _name, message in captured if level <= av.logging.ERROR and message.strip()]
    for line in captured:
        log.debug("ffmpeg: %s", line)
    if errors:
        return "; ".join(dict.fromkeys(errors))  # unique, in order
    return getattr(exc, "strerror", None) or str(exc).splitlines()[0]
