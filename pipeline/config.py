"""The pipeline's YAML config as typed, frozen dataclasses.

A config names one or more stream pairs (an infrared and a visible source each), the
model, the sinks and a few run settings::

    streams:
      - id: cam0
        ir:      {kind: video, path: data/ir.mp4}
        visible: {kind: video, path: data/vi.mp4}
        registration: {calibration: calib/cam0.yaml, warp: ir_to_visible, crop: false}
        sync: {slop_s: null, offset_s: null, leader: visible, max_delay_s: 0.1}
    model: {weights: null, device: auto, batch_size: null, max_wait_ms: 10, smoothing: true, compile: auto, compile_mode: auto}
    sinks:
      - {kind: mp4, path: "{stream}.mp4"}
      - {kind: zmq, endpoint: "tcp://127.0.0.1:5555"}
    run: {out_dir: runs/example}

Input paths are relative to the current directory; sink paths are relative to
``run.out_dir`` when it is set (else to the current directory), and stay inside it: a
``..`` that leaves it, or a stream id of ``..``, is refused, and an absolute sink path needs
``run.allow_absolute_paths: true``. No output may be one of the inputs (compared after
resolving links); an output that already exists needs ``run.overwrite: true``
(``ldfusion run --overwrite``), checked by ``check_outputs`` before anything is opened.
``--set streams.0.sync.slop_s=0.02`` reaches into lists by index. Every value is checked
here (numbers are finite: ``ldfusion.config``), so a typo or a bad value is a one-line
``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ldfusion.backends import PRECISIONS
from ldfusion.codecs import DECODES, ENCODERS
from ldfusion.config import from_dict, load_config, saved_mapping
from ldfusion.errors import ConfigError, DataError
from ldfusion.imageio import pair_folders
from ldfusion.inference import COMPILE_KINDS, COMPILE_MODES
from ldfusion.paths import file_key, same_file
from ldfusion.variants import VARIANTS

SOURCE_KINDS = ("video", "images", "camera")
WARPS = ("ir_to_visible", "visible_to_ir")
LEADERS = ("visible", "ir")
MODES = ("auto", "file", "live")
SINK_KINDS = ("mp4", "png", "zmq")
CONTENTS = ("fused", "side_by_side")
MP4_SUFFIXES = (".mp4", ".m4v", ".mov")  # containers the mp4 sink's options (movflags) apply to
# A frame rate sets timestamps and the MP4's rate. Below 0.1 fps (one frame in 10 s) rates
# stop being representable (1/1001 steps) and pairing windows span minutes: time-lapse
# pictures are given the rate they should play at instead.
MIN_FPS, MAX_FPS = 0.1, 1000.0
RUN_ARTEFACTS = ("config.yaml", "summary.json")  # written into out_dir by every run
ZMQ_PIXEL_FORMATS = ("rgb24", "bgr24", "gray")
# Which kinds of source read each setting of SourceConfig (kind and path: all of them).
SOURCE_SETTINGS = {
    "fps": ("images", "camera", "video"), "max_frames": ("video", "images"), "decode": ("video",),
    "reconnect_backoff_s": ("camera",), "reconnect_max_s": ("camera",), "max_reconnects": ("camera",), "read_timeout_s": ("camera",),
}
# Which kinds of sink read each setting of SinkConfig (kind itself: all of them).
SINK_SETTINGS = {
    "path": ("mp4", "png"), "content": ("mp4", "png"),
    "crf": ("mp4",), "preset": ("mp4",), "encoder": ("mp4",), "fragmented": ("mp4",), "keyint": ("mp4",),
    "pixel_format": ("zmq",), "endpoint": ("zmq",), "topic": ("zmq",), "hwm": ("zmq",), "wait_subscribers": ("zmq",),
    "wait_timeout_s": ("zmq",),
}
C_INT_MAX = 2**31 - 1  # FFmpeg's GOP size and ZeroMQ's high-water mark are C ints: a larger value overflowed deep inside


@dataclass(frozen=True)
class SourceConfig:
    """One camera's frames: a video file, a folder of images, or a live camera."""

    kind: str = "video"  # video | images | camera
    path: str | None = None  # video file, image folder, or a camera's device index ("0") or URL
    fps: float | None = None  # images: required (timestamps are index / fps); camera, video: used when it does not say (raw .mjpeg)
    max_frames: int | None = None  # video, images: read at most this many frames
    reconnect_backoff_s: float = 0.5  # camera: first wait after it stops delivering; doubles each time
    reconnect_max_s: float = 10.0  # camera: longest wait between attempts
    max_reconnects: int | None = None  # camera: give up (an error) after this many failed attempts; None = never
    read_timeout_s: float = 5.0  # camera (URL): a read that takes longer counts as stopped
    decode: str = "auto"  # video: auto (the CPU decoder: faster than NVDEC through PyAV; ldfusion.codecs) | cpu | cuda (NVDEC, else the CPU with a warning)

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(SOURCE_KINDS)}; got {self.kind!r}")
        _refuse_settings_of_other_kinds(self, SOURCE_SETTINGS, "source")
        if not self.path:
            raise ValueError(f"a {self.kind} source needs a path")
        if self.kind == "images" and self.fps is None:
            raise ValueError("an images source needs fps (timestamps are index / fps)")
        if self.fps is not None and not MIN_FPS <= self.fps <= MAX_FPS:
            raise ValueError(f"fps must be between {MIN_FPS:g} and {MAX_FPS:g}; got {self.fps:g}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be at least 1; got {self.max_frames}")
        if self.read_timeout_s <= 0:
            raise ValueError(f"read_timeout_s must be positive; got {self.read_timeout_s}")
        if self.reconnect_backoff_s <= 0 or self.reconnect_max_s < self.reconnect_backoff_s:
            raise ValueError("need 0 < reconnect_backoff_s <= reconnect_max_s")
        if self.max_reconnects is not None and self.max_reconnects < 0:
            raise ValueError(f"max_reconnects must be >= 0; got {self.max_reconnects}")
        if self.decode not in DECODES:
            raise ValueError(f"decode must be one of {', '.join(DECODES)}; got {self.decode!r}")

    @property
    def camera_id(self) -> int | str:
        """A camera's device index as an int, or its URL/file as a string."""
        assert self.path is not None
        return int(self.path) if self.path.isdigit() else self.path


@dataclass(frozen=True)
class RegistrationConfig:
    calibration: str | None = None  # registration YAML from `ldfusion calibrate`; None = identity
    warp: str = "ir_to_visible"  # which image is warped onto the other's frame
    crop: bool = False  # crop both to the common field of view (the file's crop, else computed)

    def __post_init__(self) -> None:
        if self.calibration is not None and not self.calibration.strip():  # a template's unset variable ran uncalibrated
            raise ValueError("calibration is empty; name a calibration file (or leave the key out for none)")
        if self.warp not in WARPS:
            raise ValueError(f"warp must be one of {', '.join(WARPS)}; got {self.warp!r}")


@dataclass(frozen=True)
class SyncConfig:
    slop_s: float | None = None  # largest |t_ir - t_vi| that may pair; None = half the follower's frame period
    offset_s: float | None = None  # added to IR timestamps; None = the calibration's time_offset_s (else 0)
    leader: str = "visible"  # the output follows this camera's frames and rate
    max_delay_s: float = 0.1  # live: a follower frame may arrive this long after its timestamp (jitter, bursts) and still pair

    def __post_init__(self) -> None:
        if self.slop_s is not None and self.slop_s < 0:
            raise ValueError(f"slop_s must be >= 0; got {self.slop_s}")
        if not 0 <= self.max_delay_s <= 10:
            raise ValueError(f"max_delay_s must be in [0, 10]; got {self.max_delay_s}")
        if self.leader not in LEADERS:
            raise ValueError(f"leader must be one of {', '.join(LEADERS)}; got {self.leader!r}")


@dataclass(frozen=True)
class StreamConfig:
    ir: SourceConfig
    visible: SourceConfig
    id: str = "cam0"
    registration: RegistrationConfig = RegistrationConfig()
    sync: SyncConfig = SyncConfig()

    def __post_init__(self) -> None:
        # It names files ({stream} in sink paths): starting with a letter or digit rules out "." and "..".
        if not self.id or not self.id[0].isalnum() or not all(c.isalnum() or c in "-_." for c in self.id):
            raise ValueError(f"stream id must start with a letter or digit and hold only those, '-', '_' or '.'; got {self.id!r}")
        if self.ir.kind == self.visible.kind == "images":
            self._check_image_folders_pair()
        elif self.ir.kind == self.visible.kind and self._same_source():
            raise ValueError(f"stream {self.id}: ir and visible read the same {self.ir.kind}, {self.ir.path}; give one of each camera")

    def _same_source(self) -> bool:
        """Both sides the same file (another name for it included) or the same camera: every frame fused with itself."""
        ir, visible = str(self.ir.path), str(self.visible.path)
        if self.ir.kind == "camera" and not Path(ir).exists():
            return ir == visible  # a device index or URL
        return same_file(ir, visible)

    def _check_image_folders_pair(self) -> None:
        """Two image folders pair by name, so they must hold the same names and share one rate."""
        if self.ir.fps != self.visible.fps:
            raise ValueError(f"stream {self.id}: two image folders pair by name, so they need one fps; got ir {self.ir.fps:g}, visible {self.visible.fps:g}")
        ir, visible = Path(str(self.ir.path)), Path(str(self.visible.path))
        if ir.is_dir() and visible.is_dir():  # a missing folder is reported when the source opens
            try:
                pair_folders(ir, visible)
            except DataError as exc:
                raise ValueError(f"stream {self.id}: {exc}") from None

    @property
    def live(self) -> bool:
        return "camera" in (self.ir.kind, self.visible.kind)


@dataclass(frozen=True)
class ModelConfig:
    weights: str | None = None  # None = the bundled default; else a path or a registry name
    variant: str | None = None  # None = read from the weights
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    half: bool | None = None  # None = half precision on CUDA
    channels_last: bool | None = None  # None = on for CUDA
    batch_size: int | None = None  # fuse up to this many frames at once (None: 8 on CUDA, 1 on the CPU) ...
    max_wait_ms: float = 10.0  # ... or whatever arrived within this long after the first
    smoothing: bool = True  # EMA over time of the ldfusion style codes (a no-op for ld-lite)
    smoothing_momentum: float = 0.8  # weight of the running average; 0 = no smoothing
    compile: str | bool = "auto"  # torch.compile the network: auto (on for CUDA, off on the CPU) | on | off
    compile_mode: str = "auto"  # auto (reduce-overhead on CUDA) | default | reduce-overhead (the compiled kernels replayed as CUDA graphs)
    int8: bool | None = None  # OpenVINO int8 on the CPU; None = auto: on where weights: auto has a shipped int8 export
    precision: str = "auto"  # OpenVINO's float layers: auto (f32; bf16 in int8 networks on CPUs that have it) | f32 | bf16

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {self.batch_size}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0; got {self.max_wait_ms}")
        if not 0.0 <= self.smoothing_momentum < 1.0:
            raise ValueError(f"smoothing_momentum must be in [0, 1); got {self.smoothing_momentum}")
        if isinstance(self.compile, bool):  # YAML 1.1 reads a bare on/off as true/false
            object.__setattr__(self, "compile", "on" if self.compile else "off")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}; got {self.compile!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.compile_mode not in COMPILE_KINDS:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_KINDS)}; got {self.compile_mode!r}")
        if self.variant is not None and self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(sorted(VARIANTS))}; got {self.variant!r}")


@dataclass(frozen=True)
class SinkConfig:
    kind: str  # mp4 | png | zmq
    path: str | None = None  # mp4: file; png: folder. May contain {stream}; relative to run.out_dir
    content: str = "fused"  # fused | side_by_side (IR | visible | fused)
    crf: int = 18  # mp4: x264 quality, 0 (lossless) .. 51
    preset: str = "veryfast"  # mp4: x264 speed/size trade-off (mapped onto NVENC's p1..p7)
    encoder: str = "auto"  # mp4: auto (h264_nvenc when it opens, else libx264) | libx264 | h264_nvenc
    fragmented: bool = False  # mp4: fragmented MP4 stays playable (to the last GOP) even if the process is killed
    keyint: int | None = None  # mp4: frames per GOP, one fragment each when fragmented (None: 1 s if fragmented, else the encoder default)
    pixel_format: str = "rgb24"  # zmq: rgb24 | bgr24 | gray (the fused luma)
    endpoint: str = "tcp://127.0.0.1:5555"  # zmq: where to bind
    topic: str = "fused"  # zmq: messages go out as "<topic>/<stream id>"
    hwm: int = 8  # zmq: frames queued per subscriber (keep >= batch size); beyond it that subscriber misses frames
    wait_subscribers: int = 0  # zmq: hold the first frame until this many subscribers joined ...
    wait_timeout_s: float = 10.0  # ... or this long passed

    def __post_init__(self) -> None:
        if self.kind not in SINK_KINDS:
            raise ValueError(f"sink kind must be one of {', '.join(SINK_KINDS)}; got {self.kind!r}")
        _refuse_settings_of_other_kinds(self, SINK_SETTINGS, "sink")
        if self.kind in ("mp4", "png") and not self.path:
            raise ValueError(f"a {self.kind} sink needs a path")
        _check_placeholders(self.path)
        if self.kind == "mp4" and Path(str(self.path)).suffix.lower() not in MP4_SUFFIXES:
            raise ValueError(f"an mp4 sink's path must end in {', '.join(MP4_SUFFIXES)}; got {self.path!r}")
        if self.content not in CONTENTS:
            raise ValueError(f"content must be one of {', '.join(CONTENTS)}; got {self.content!r}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in 0..51; got {self.crf}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}; got {self.encoder!r}")
        if self.kind == "zmq":
            _check_publisher_endpoint(self.endpoint)
        if self.keyint is not None and not 1 <= self.keyint <= C_INT_MAX:
            raise ValueError(f"keyint must be within 1..{C_INT_MAX}; got {self.keyint}")
        if self.pixel_format not in ZMQ_PIXEL_FORMATS:
            raise ValueError(f"pixel_format must be one of {', '.join(ZMQ_PIXEL_FORMATS)}; got {self.pixel_format!r}")
        if not 1 <= self.hwm <= C_INT_MAX:
            raise ValueError(f"hwm must be within 1..{C_INT_MAX}; got {self.hwm}")
        if self.wait_subscribers > C_INT_MAX:
            raise ValueError(f"wait_subscribers must be at most {C_INT_MAX}; got {self.wait_subscribers}")
        if self.wait_subscribers < 0 or self.wait_timeout_s < 0:
            raise ValueError("wait_subscribers and wait_timeout_s must be >= 0")


def _refuse_settings_of_other_kinds(config, settings: dict[str, tuple[str, ...]], what: str) -> None:
    """A setting that another kind of sink or source reads was passed over in silence
    (``pixel_format: gray`` on a png sink still wrote RGB; ``crf`` on png, ``path`` on zmq,
    ``read_timeout_s`` on a video file). Set to anything but its default, it is refused,
    naming the kinds that read it. ``settings``: which kinds read each setting."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for name, kinds in settings.items():
        if config.kind not in kinds and getattr(config, name) != defaults[name]:
            raise ValueError(f"{name} is not a setting of {config.kind} {what}s (only {' and '.join(kinds)} {what}s read it)")


def _check_placeholders(path: str | None) -> None:
    """{stream} is the only field a sink path fills; a misspelt one ({strem}, {stream.mp4,
    {{stream}}) named the file literally. Braces are for it alone."""
    rest = (path or "").replace("{stream}", "")
    if "{" in rest or "}" in rest:
        unknown = sorted(set(re.findall(r"\{[^{}]*\}", rest))) or ["a brace"]
        raise ValueError(f"sink path {path!r} holds {', '.join(unknown)}; the one placeholder a path may hold is {{stream}}")


def _check_one_publisher_a_port(sinks: list[SinkConfig]) -> None:
    """Two zmq sinks on one endpoint: the second bind failed with "Address already in use", as
    if another program held the port. (A port of * takes a free one each.)"""
    bound: dict[object, str] = {}
    for sink in sinks:
        if sink.kind != "zmq" or sink.endpoint.endswith(":*"):
            continue
        key = _bind_key(sink.endpoint)
        if key in bound:
            raise ValueError(f"sinks: two zmq sinks bind {bound[key]} and {sink.endpoint}, one place; one sink "
                             "publishes every stream (topics <topic>/<stream>)")
        bound[key] = sink.endpoint


def _bind_key(endpoint: str) -> object:
    """What two binds must not share: a TCP port whatever the host is called (localhost,
    127.0.0.1 and * all take the same port on this machine), else the endpoint itself."""
    port = tcp_port(endpoint)
    return ("tcp", int(port)) if port is not None and port.isdigit() else endpoint


def tcp_port(endpoint: str) -> str | None:
    """The port of a ``tcp://`` endpoint as written (digits, ``*`` or anything else); None for other transports."""
    return endpoint.rpartition(":")[2] if endpoint.startswith("tcp://") else None


def check_tcp_port(endpoint: str, bind: bool = False) -> None:
    """A tcp:// endpoint's port must be 1-65535 (or ``*``, any free port, to bind): ZeroMQ takes
    99999 modulo 65536 and binds port 34463 without a word, so a subscriber on the port the
    config names hears nothing, and a subscriber given port 70000 waits forever."""
    port = tcp_port(endpoint)
    if port is not None and not ((bind and port == "*") or (port.isdigit() and 1 <= int(port) <= 65535)):
        anything = " (or * for any free port)" if bind else ""
        raise ConfigError(f"ZeroMQ endpoint {endpoint}: the port must be 1-65535{anything}; got {port!r}")


def _check_publisher_endpoint(endpoint: str) -> None:
    """Endpoints a subscriber can reach, and that destroy nothing by being bound.

    ``ipc://PATH``: libzmq unlinks whatever is at PATH before it binds its socket there, so an
    input video, the config or any other file there was deleted (exit 0). Only an old socket
    (a previous run's) may be there. ``inproc://``: reachable from the publisher's own ZeroMQ
    context only, which nothing else shares; in-process consumers read ``pipeline.fused_frames``.
    """
    if endpoint.startswith("inproc://"):
        raise ValueError(f"zmq endpoint {endpoint}: inproc:// reaches no subscriber (the sink has its own context); "
                         "use tcp:// or ipc://, or pipeline.fused_frames in the same process")
    if endpoint.startswith("ipc://"):
        path = Path(endpoint[len("ipc://"):])
        if path.exists() and not path.is_socket():
            raise ValueError(f"zmq endpoint {endpoint}: binding there deletes the {'folder' if path.is_dir() else 'file'} "
                             f"{str(path)!r} (ZeroMQ replaces what is at an ipc:// path); give a path where nothing but an old socket is")


@dataclass(frozen=True)
class RunConfig:
    out_dir: str | None = None  # sink paths are relative to it; config.yaml and summary.json go there
    mode: str = "auto"  # auto (live when a source is a camera) | file | live
    realtime: bool = False  # pace file sources at their recorded rate (replay a recording as if live)
    queue_size: int = 16  # file mode: frames held between stages; producers wait when full
    live_queue_size: int = 2  # live mode: newest frames kept per camera; older ones are dropped
    max_frames: int | None = None  # stop each stream after this many output frames
    duration_s: float | None = None  # stop the run after this long
    stats_interval_s: float = 10.0  # log stage statistics this often
    progress: bool = True  # a progress bar in file mode
    overwrite: bool = False  # replace outputs that already exist (else the run refuses to start)
    allow_absolute_paths: bool = False  # let a sink path be absolute, i.e. write outside out_dir

    def __post_init__(self) -> None:
        if self.out_dir is not None and not self.out_dir.strip():  # Path("") is the current folder
            raise ValueError("run.out_dir is empty; name a folder (or leave the key out)")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.queue_size < 1 or self.live_queue_size < 1:
            raise ValueError("queue_size and live_queue_size must be at least 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be at least 1; got {self.max_frames}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration_s must be positive; got {self.duration_s}")
        if self.stats_interval_s <= 0:
            raise ValueError(f"stats_interval_s must be positive; got {self.stats_interval_s}")


@dataclass(frozen=True)
class PipelineConfig:
    streams: tuple[StreamConfig, ...]
    model: ModelConfig = ModelConfig()
    sinks: tuple[SinkConfig, ...] = ()  # none: fused frames are discarded (benchmarks)
    run: RunConfig = RunConfig()

    def __post_init__(self) -> None:
        if not self.streams:
            raise ValueError("streams: at least one stream pair is needed")
        ids = [stream.id for stream in self.streams]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"streams: ids must be unique; repeated: {', '.join(duplicates)}")
        if len(self.streams) > 1:
            for sink in self.sinks:
                if sink.kind in ("mp4", "png") and "{stream}" not in (sink.path or ""):
                    raise ValueError(f"sinks: with several streams, the {sink.kind} path {sink.path!r} needs {{stream}}")
        if self.run.mode == "file" and any(stream.live for stream in self.streams):
            raise ValueError("run.mode file cannot read live cameras; use mode live or auto")
        _check_outputs_apart_from_inputs(self)
        _check_one_publisher_a_port(self.sinks)

    @property
    def live(self) -> bool:
        if self.run.mode == "auto":
            return any(stream.live for stream in self.streams)
        return self.run.mode == "live"

    def sink_path(self, sink: SinkConfig, stream: str) -> Path:
        """Where a file sink writes ``stream``: its path with {stream} filled, under out_dir.

        A path that would leave out_dir (``..``, or absolute without
        ``run.allow_absolute_paths``) is a ValueError.
        """
        path = Path(str(sink.path).replace("{stream}", stream))
        if path.is_absolute():
            if not self.run.allow_absolute_paths:
                raise ValueError(f"sink path {str(path)!r} is absolute; write under run.out_dir, or set run.allow_absolute_paths: true")
            return path
        base = Path(self.run.out_dir) if self.run.out_dir else Path(".")
        if not _inside(base / path, base):
            where = f"{'run.out_dir ' if self.run.out_dir else 'the current folder '}{str(base)!r}"
            if (base / path).is_symlink():  # the path stays inside; a link planted there points out
                raise ValueError(f"sink path {sink.path!r} (stream {stream}) is a link to {os.readlink(base / path)!r}, outside {where}; remove the link")
            raise ValueError(f"sink path {sink.path!r} (stream {stream}) leaves {where}")
        return base / path

    def output_paths(self) -> list[tuple[str, Path]]:
        """Every file or folder a run writes, as (kind, path): "mp4" files, "png" folders, "zmq"
        ipc:// sockets (a socket on an MP4's path lost the video), run artefacts."""
        outputs = [(sink.kind, self.sink_path(sink, stream.id)) for sink in self.sinks if sink.kind in ("mp4", "png") for stream in self.streams]
        outputs += [("zmq", Path(sink.endpoint[len("ipc://"):])) for sink in self.sinks if sink.kind == "zmq" and sink.endpoint.startswith("ipc://")]
        if self.run.out_dir:
            outputs += [("artefact", Path(self.run.out_dir) / name) for name in RUN_ARTEFACTS]
        return outputs

    def input_paths(self) -> list[Path]:
        """Files and folders a run reads: sources (cameras given as files too) and calibration files."""
        paths = [Path(str(source.path)) for stream in self.streams for source in (stream.ir, stream.visible) if source.kind != "camera" or Path(str(source.path)).is_file()]
        return paths + [Path(stream.registration.calibration) for stream in self.streams if stream.registration.calibration]


def check_outputs(config: PipelineConfig, config_file: str | os.PathLike | None = None) -> None:
    """Before anything is opened for writing: refuse outputs of the wrong type, existing ones
    unless ``run.overwrite``, and any that would replace ``config_file``, the config the run was
    started from (a config.yaml saved by an earlier run, run again from its own out_dir, is one).
    Raises ``ConfigError`` with one line naming the path."""
    out_dir = Path(config.run.out_dir) if config.run.out_dir else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"run.out_dir {str(out_dir)!r} is a file, not a folder")
    for kind, path in config.output_paths():
        _check_name_lengths(kind, path)
        if config_file is not None and same_file(config_file, path):
            raise ConfigError(f"the run would write {str(path)!r}, which is its own config file; copy the config elsewhere or choose another --out")
        if kind == "png" and path.exists() and not path.is_dir():
            raise ConfigError(f"the png sink writes into the folder {str(path)!r}, but that is a file")
        if kind == "mp4" and path.is_dir():
            raise ConfigError(f"the mp4 sink writes the file {str(path)!r}, but that is a folder")
        if kind == "mp4" and path.is_symlink():  # followed, it wrote another file of out_dir, or made the one a dangling link names
            raise ConfigError(f"the mp4 sink writes the file {str(path)!r}, but that is a link (to {os.readlink(path)!r}); remove the link")
        if kind == "artefact" and path.is_dir():  # --overwrite was advised, and then "Is a directory" came after the run
            raise ConfigError(f"the run saves {path.name} as {str(path)!r}, but that is a folder; move it, or choose another --out")
        existing = (kind == "mp4" and path.exists()) or (kind == "png" and path.is_dir() and any(path.glob("*.png")))
        if existing and not config.run.overwrite:
            what = "holds PNG frames" if kind == "png" else "exists"
            raise ConfigError(f"{str(path)!r} {what} already; pass --overwrite (run.overwrite: true) to replace it, or choose another --out")
        # An earlier run's config.yaml and summary.json are replaced as they always were; a file
        # of that name that no run wrote (the user's notes) was replaced too, without a word.
        if kind == "artefact" and path.exists() and not config.run.overwrite and not saved_by_a_run(path):
            raise ConfigError(f"{str(path)!r} exists and is not what a run saves there; pass --overwrite (run.overwrite: true) "
                              "to replace it, or choose another --out")


def saved_by_a_run(path: Path) -> bool:
    """Whether ``path``, a run artefact's name, holds what a run writes there: a config (a mapping
    with streams) as config.yaml, a run summary (with frames_out) as summary.json."""
    data = saved_mapping(path)
    return data is not None and ("frames_out" in data if path.suffix == ".json" else isinstance(data.get("streams"), list))


def _check_name_lengths(kind: str, path: Path) -> None:
    """A name longer than the file system takes failed only once frames were fused (the other
    sinks had written), with advice about disk space: refused before the run instead."""
    existing = next((folder for folder in path.absolute().parents if folder.is_dir()), Path("/"))
    try:
        longest = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):  # the file system does not say
        return
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > longest:
            raise ConfigError(f"the {kind} output {str(path)!r} has a name of {size} bytes ({part[:24]}...); "
                              f"this file system takes names up to {longest}")


def _check_outputs_apart_from_inputs(config: PipelineConfig) -> None:
    """No output is an input (or holds one, for a PNG folder), and no two outputs are the same."""
    inputs = {file_key(path): path for path in config.input_paths()}  # another name (a hard link) for an input is the input
    input_pngs = {path.resolve().parent: path for path in config.input_paths() if path.suffix.lower() == ".png"}
    seen: dict[Path, str] = {}
    for kind, path in config.output_paths():
        resolved = path.resolve()
        if resolved in seen:
            raise ValueError(f"two outputs write {str(path)!r} ({seen[resolved]} and {kind})")
        seen[resolved] = kind
        # A PNG folder's frames are 000000.png ...: they clobber the PNGs directly in it.
        given = inputs.get(file_key(path)) or (input_pngs.get(resolved) if kind == "png" else None)
        if given is not None:
            raise ValueError(f"the {kind} output {str(path)!r} would overwrite the input {str(given)!r}")


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it, after resolving ``..`` and links."""
    return path.resolve().is_relative_to(folder.resolve())


def as_pipeline_config(config: PipelineConfig | dict | str | os.PathLike) -> PipelineConfig:
    """What the Python API takes as a config: a ``PipelineConfig``, the same as a dict, or a YAML file's path."""
    if isinstance(config, PipelineConfig):
        return config
    if isinstance(config, dict):
        return from_dict(PipelineConfig, config)
    if isinstance(config, str) and "\n" in config and not Path(config).exists():
        # The whole YAML text was printed back as a missing file's name, over many lines.
        raise TypeError("config is YAML text; give the file's path, or the text as a dict (yaml.safe_load(text))")
    if isinstance(config, (str, os.PathLike)):
        return load_pipeline_config(config)
    raise TypeError(f"config must be a PipelineConfig, a dict or a YAML file's path; got {type(config).__name__}")


def load_pipeline_config(path: str | os.PathLike | None, overrides: list[str] | None = None, settings: dict | None = None) -> PipelineConfig:
    """Read ``path`` (YAML), apply ``key=value`` overrides (list items by index) and the
    command's ``settings`` (``ldfusion.config.load_config``), and check it."""
    return load_config(PipelineConfig, path, overrides, settings)
