"""The benchmark engine behind ``ldfusion bench``: fused frames per second, latency and peak memory.

Three ways of fusing the same synthetic frames are timed in one run, per device and
resolution, so their ratios mean something:

- ``reference``: the straightforward per-frame path of the authors' test script: one frame
  at a time in float32, the colour conversion through OpenCV on the host (RGB -> YCrCb
  on float, the network on Y + IR, back to RGB with OpenCV), the result truncated to uint8.
- ``model``: ``Fuser.fuse_arrays`` on batches of host uint8 frames: the same input and
  output as the reference, with the colour conversion on the device (half precision and
  ``channels_last`` on CUDA by default).
- ``model_on_device``: ``Fuser.fuse_rgb`` on batches already on the device: the network
  and the colour conversion alone, no host transfers.
- ``pipeline``: the streaming pipeline (``pipeline.runner.run_pipeline``) on the same
  frames written to a pair of MP4 files, decoding included, no sinks.
- ``decode``: only PyAV decoding of both files to planes (``ldfusion.video.VideoReader``),
  the floor under the pipeline's own cost.
- ``passthrough``: the whole pipeline with an identity network (the fused Y is the visible
  Y), so the pipeline's own overhead shows.

``streams`` runs N copies of the stream pair in one pipeline (decode: N pairs one after
another); ``fps`` always counts fused (or decoded) pairs of all streams per second.

The command (argument parsing, JSON, the table) is ``ldfusion_cli.bench``.

Latency is per call (a batch; one frame for the reference) and per frame (call / batch);
p50 and p99 over the timed calls. Peak memory: CUDA ``max_memory_allocated`` per
measurement, and the process's peak resident set size (``ru_maxrss``, which only grows).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from ldfusion.config import from_dict
from ldfusion.errors import ConfigError
from ldfusion.inference import COMPILE_MODES, Fuser, FuserOptions, resolve_device
from ldfusion.networks import FusionNet
from ldfusion.variants import VariantSpec
from ldfusion.video import VideoReader, VideoWriter
from pipeline.config import PipelineConfig
from pipeline.runner import cpu_streams, run_pipeline

log = logging.getLogger(__name__)

MAX_STREAMS = 128
PATHS = ("reference", "model", "model_on_device", "pipeline", "decode", "passthrough")
DEFAULT_RESOLUTIONS = ("640x480", "1280x720")
_DISTINCT_FRAMES = 8  # the synthetic clip cycles through this many frames


@dataclass(frozen=True)
class Frames:
    """The synthetic clip: visible RGB and infrared uint8 frames of one size."""

    visible: list[np.ndarray]  # (H, W, 3)
    ir: list[np.ndarray]  # (H, W)

    @property
    def size(self) -> tuple[int, int]:
        height, width = self.ir[0].shape
        return width, height


@dataclass
class Measurement:
    path: str
    device: str
    resolution: str
    batch: int
    streams: int = 1
    frames: int = 0
    wall_s: float = 0.0
    fps: float = 0.0
    latency_ms_call_p50: float | None = None
    latency_ms_call_p99: float | None = None
    latency_ms_frame_p50: float | None = None
    latency_ms_frame_p99: float | None = None
    peak_cuda_mb: float | None = None
    peak_rss_mb: float = 0.0
    extra: dict = field(default_factory=dict)
    skipped: str | None = None


@dataclass(frozen=True)
class BenchSettings:
    """What to measure at each device and resolution."""

    paths: tuple[str, ...] = PATHS
    batch_sizes: tuple[int, ...] = (1, 4)
    frames: int = 16  # timed frames per measurement
    warmup: int = 2  # untimed calls before each measurement
    fp32: bool = False  # keep float32 on CUDA (default: half)
    streams: int = 1  # stream pairs in one pipeline (pipeline, passthrough, decode)
    compile: str = "off"  # torch.compile the network (FuserOptions.compile): auto | on | off
    compile_backend: str = "inductor"
    compile_mode: str = "auto"  # FuserOptions.compile_mode: auto (CUDA graphs on CUDA) | default | reduce-overhead
    backend: str = "auto"  # CPU runtime of the model and pipeline paths (ldfusion.backends)
    int8: bool | None = None  # OpenVINO's int8 export; None: as the Fuser decides per device (ldfusion.backends.auto_int8)
    precision: str = "auto"  # OpenVINO's float layers (ldfusion.backends.float_precision)
    weights_path: Path | None = None  # the weights file whose cached export OpenVINO runs
    auto_weights: bool = False  # the weights were chosen by ``auto`` (which may also choose int8)

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"--compile must be one of {', '.join(COMPILE_MODES)}; got {self.compile!r}")
        if not 1 <= self.streams <= MAX_STREAMS:  # 100000 ran out of file handles, blamed on bench's own clip
            raise ConfigError(f"--streams must be within 1..{MAX_STREAMS} (each stream pair opens two files and runs three threads); got {self.streams}")
        # A name torch.compile does not know would fall back to eager with a warning
        # (CompiledNetwork), and the run would time an uncompiled network under the compiled heading.
        # Asked only when compiling: listing the backends imports TorchDynamo (1.6 s here).
        if self.compile != "off" and self.compile_backend not in torch.compiler.list_backends(exclude_tags=()):
            raise ConfigError(f"--compile-backend {self.compile_backend!r} is not a torch.compile backend here; "
                              f"choose one of {', '.join(torch.compiler.list_backends())} (or aot_eager, eager)")
        if self.frames < 1 or self.warmup < 0:
            raise ConfigError(f"--frames must be at least 1 and --warmup at least 0; got {self.frames} and {self.warmup}")
        if any(batch < 1 for batch in self.batch_sizes):
            raise ConfigError(f"batch sizes must be at least 1; got {list(self.batch_sizes)}")


def default_devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


MAX_SIDE, MAX_PIXELS = 8190, 7680 * 4320


def parse_resolution(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"resolution must look like 640x480; got {text!r}") from None
    if width < 8 or height < 8:
        raise ConfigError(f"resolution must be at least 8x8; got {text!r}")
    # The pipeline paths' test clips are MPEG-4 part 2 (fast to decode), whose sides stop at 8191
    # (wider failed as 'cannot finish ...: Invalid argument'); 20000x20000 grew to 24 GB and was killed.
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise ConfigError(f"resolution {text!r} is beyond what bench measures: sides up to {MAX_SIDE}, up to 8K UHD (7680x4320) in pixels")
    return width, height


def synthetic_frames(width: int, height: int, count: int = _DISTINCT_FRAMES, seed: int = 0) -> Frames:
    """A short clip of a textured scene panning sideways, with a warm moving blob in the IR."""
    rng = np.random.default_rng(seed)
    margin = 4 * count
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (height, width + margin)).astype(np.float32), (0, 0), 3.0)
    texture = cv2.normalize(texture, None, 30, 220, cv2.NORM_MINMAX)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    visible, ir = [], []
    for t in range(count):
        gray = texture[:, 4 * t : 4 * t + width]
        visible.append(np.stack([gray, gray * 0.9 + 10, 240 - gray * 0.8], axis=-1).astype(np.uint8))
        cx, cy = width * (0.3 + 0.4 * t / count), height * 0.5
        blob = 200 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (0.1 * min(width, height)) ** 2))
        ir.append(np.clip(0.3 * (255 - gray) + blob, 0, 255).astype(np.uint8))
    return Frames(visible, ir)


# --- measuring ---------------------------------------------------------------------------


def measure_all(model: FusionNet, device: torch.device, frames: Frames, settings: BenchSettings) -> list[Measurement]:
    """Every chosen path at one device and resolution; the reference once, the others per batch size."""
    results = []
    log.info("measuring on %s at %dx%d", device, *frames.size)
    if "reference" in settings.paths:
        results.append(measure_reference(model, device, frames, settings.frames, settings.warmup))
    options = FuserOptions(
        device=str(device), half=False if settings.fp32 else None, compile=settings.compile,
        compile_backend=settings.compile_backend, compile_mode=settings.compile_mode, backend=settings.backend, int8=settings.int8,
        precision=settings.precision,
    )
    # The weights file's cached (or shipped) export, for OpenVINO; int8 as the Fuser decides when unset.
    fuser = Fuser(copy.deepcopy(model), options, settings.weights_path, chosen_by_auto=settings.auto_weights)
    # The pipeline path runs the network as a file-mode run does (two OpenVINO calls in flight).
    streams = cpu_streams(live=False)
    pipeline_fuser = fuser
    if "pipeline" in settings.paths and fuser.cpu_network is not None and streams != options.cpu_streams:
        pipeline_fuser = Fuser(copy.deepcopy(model), replace(options, cpu_streams=streams), settings.weights_path,
                               chosen_by_auto=settings.auto_weights)
    for batch in settings.batch_sizes:
        if "model" in settings.paths:
            results.append(_noting_runtime(measure_model(fuser, frames, batch, settings.frames, settings.warmup), fuser))
        if "model_on_device" in settings.paths:
            results.append(_noting_runtime(measure_model_on_device(fuser, frames, batch, settings.frames, settings.warmup), fuser))
        if "pipeline" in settings.paths:
            results.append(_noting_runtime(measure_pipeline(pipeline_fuser, frames, batch, settings.frames, settings.streams), pipeline_fuser))
        if "passthrough" in settings.paths:
            identity = Fuser(IdentityFusion(), FuserOptions(device=str(device), half=False))
            results.append(measure_pipeline(identity, frames, batch, settings.frames, settings.streams, path="passthrough"))
    if "decode" in settings.paths:
        results.append(measure_decode(device, frames, settings.frames, settings.streams))
    return results


class IdentityFusion(torch.nn.Module):
    """A network that returns the visible Y unchanged: the pipeline's cost without a model's."""

    spec = VariantSpec(name="identity", content_dim=1, n_downsample=2, n_residual=0)  # no style path: nothing to smooth

    def forward(self, vi_y: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        return vi_y


def _noting_runtime(result: Measurement, fuser: Fuser) -> Measurement:
    """What ran the network: the backend, int8 or not, and whether the compiled network ran
    (False also when compiling failed and eager took over; the warm-up calls take the compile
    time, logged once by ``ldfusion.inference``)."""
    calls = fuser.cpu_network.streams if fuser.cpu_network is not None else 1
    result.extra.update(backend=fuser.backend, int8=fuser.int8, precision=fuser.precision, compiled=fuser.compiled,
                        cuda_graphs=fuser.cuda_graphs, calls_in_flight=calls)
    return result


def runtime_summary(results: list[Measurement]) -> list[str]:
    """One line per device: what ran the network there (the table's fps depend on it)."""
    seen: dict[str, str] = {}
    in_flight: dict[str, set[str]] = {}  # device -> paths whose network calls overlap
    for r in results:
        if "backend" in r.extra and r.device not in seen:
            precision = f" {r.extra['precision']}" if r.extra.get("precision") else ""
            compiled = (", compiled as CUDA graphs" if r.extra.get("cuda_graphs") else ", compiled") if r.extra.get("compiled") else ""
            seen[r.device] = f"{r.extra['backend']}{' int8' if r.extra.get('int8') else ''}{precision}{compiled}"
        if r.extra.get("calls_in_flight", 1) > 1:
            in_flight.setdefault(r.device, set()).add(f"{r.path} {r.extra['calls_in_flight']} calls in flight")
    return [f"network on {device}: {runtime}" + "".join(f"; {note}" for note in sorted(in_flight.get(device, ())))
            for device, runtime in seen.items()]


def measure_decode(device: torch.device, frames: Frames, count: int, streams: int) -> Measurement:
    """PyAV decoding of the IR (luma) and visible files to planes, ``streams`` pairs in turn.

    The files are opened before the clock starts, as the pipeline opens its sources before
    its own clock starts: both time the frames alone.
    """
    with tempfile.TemporaryDirectory(prefix="ldfusion-bench-") as folder, contextlib.ExitStack() as readers:
        ir_path, vi_path = write_clip(frames, Path(folder), count=count)
        pairs = [(readers.enter_context(VideoReader(ir_path, luma_only=True)), readers.enter_context(VideoReader(vi_path))) for _ in range(streams)]
        started = time.perf_counter()
        decoded = sum(sum(1 for _ in zip(ir, vi)) for ir, vi in pairs)
        wall = time.perf_counter() - started
    return Measurement(
        path="decode", device=str(device), resolution="{}x{}".format(*frames.size), batch=1, streams=streams,
        frames=decoded, wall_s=wall, fps=decoded / wall, peak_rss_mb=peak_rss_mb(),
    )


def measure_reference(model: FusionNet, device: torch.device, frames: Frames, count: int, warmup: int) -> Measurement:
    net = copy.deepcopy(model).eval().to(device, dtype=torch.float32)

    def call(index: int) -> None:
        k = index % len(frames.ir)
        reference_fuse(net, device, frames.visible[k], frames.ir[k])

    # The authors' script runs with PyTorch's defaults; Fuser turns cuDNN autotuning on globally.
    autotune = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        return _timed("reference", device, frames, batch=1, calls=count, warmup=warmup, call=call)
    finally:
        torch.backends.cudnn.benchmark = autotune


@torch.no_grad()
def reference_fuse(net: FusionNet, device: torch.device, visible: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """One frame the way the authors' test script does it (colour through OpenCV on the host)."""
    height, width = ir.shape
    vis = torch.from_numpy(visible).permute(2, 0, 1).to(device) / 255.0  # (3, H, W) on the device
    ir_t = torch.from_numpy(ir)[None].to(device) / 255.0  # (1, H, W)
    vis_hwc = vis.permute(1, 2, 0).cpu().numpy()
    vi_y = torch.from_numpy(cv2.cvtColor(vis_hwc, cv2.COLOR_RGB2YCrCb)[:, :, 0])[None].to(device)  # (1, H, W)
    fused_y = net(vi_y[None], ir_t[None])[0, :, :height, :width]  # (1, H, W)
    crcb = cv2.cvtColor(vis.permute(1, 2, 0).cpu().numpy(), cv2.COLOR_RGB2YCrCb)[:, :, 1:]
    ycrcb = np.concatenate([fused_y.permute(1, 2, 0).cpu().numpy(), crcb], axis=-1)
    rgb = torch.from_numpy(cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)).to(device)  # (H, W, 3)
    return (255 * rgb.clamp(0, 1).cpu()).numpy().astype(np.uint8)


def measure_model(fuser: Fuser, frames: Frames, batch: int, count: int, warmup: int) -> Measurement:
    n = len(frames.ir)

    def call(index: int) -> None:
        ks = [(index * batch + j) % n for j in range(batch)]
        fuser.fuse_arrays([frames.visible[k] for k in ks], [frames.ir[k] for k in ks])

    return _timed("model", fuser.device, frames, batch, calls=math.ceil(count / batch), warmup=warmup, call=call)


def measure_model_on_device(fuser: Fuser, frames: Frames, batch: int, count: int, warmup: int) -> Measurement:
    n = len(frames.ir)
    ks = [j % n for j in range(batch)]
    visible = torch.stack([torch.from_numpy(frames.visible[k]).permute(2, 0, 1) for k in ks]).to(fuser.device)
    ir = torch.stack([torch.from_numpy(frames.ir[k])[None] for k in ks]).to(fuser.device)
    visible, ir = visible.float() / 255.0, ir.float() / 255.0  # (B, 3, H, W), (B, 1, H, W)

    def call(index: int) -> None:
        fuser.fuse_rgb(visible, ir)

    return _timed("model_on_device", fuser.device, frames, batch, calls=math.ceil(count / batch), warmup=warmup, call=call)


def _timed(
    path: str, device: torch.device, frames: Frames, batch: int, calls: int, warmup: int, call: Callable[[int], None]
) -> Measurement:
    on_cuda = device.type == "cuda"
    for index in range(warmup):
        call(index)
    _synchronize(device)
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    started = time.perf_counter()
    for index in range(calls):
        tick = time.perf_counter()
        call(index)
        _synchronize(device)
        seconds.append(time.perf_counter() - tick)
    wall = time.perf_counter() - started
    per_call_ms = np.array(seconds) * 1000.0
    return Measurement(
        path=path,
        device=str(device),
        resolution="{}x{}".format(*frames.size),
        batch=batch,
        frames=calls * batch,
        wall_s=wall,
        fps=calls * batch / wall,
        latency_ms_call_p50=float(np.percentile(per_call_ms, 50)),
        latency_ms_call_p99=float(np.percentile(per_call_ms, 99)),
        latency_ms_frame_p50=float(np.percentile(per_call_ms, 50)) / batch,
        latency_ms_frame_p99=float(np.percentile(per_call_ms, 99)) / batch,
        peak_cuda_mb=torch.cuda.max_memory_allocated(device) / 2**20 if on_cuda else None,
        peak_rss_mb=peak_rss_mb(),
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


# --- the streaming pipeline ---------------------------------------------------------------


def measure_pipeline(fuser: Fuser, frames: Frames, batch: int, count: int, streams: int = 1, path: str = "pipeline") -> Measurement:
    """Run the whole pipeline (decode, pair, fuse; no sinks) on the clip written as two MP4 files."""
    with tempfile.TemporaryDirectory(prefix="ldfusion-bench-") as folder:
        ir_path, vi_path = write_clip(frames, Path(folder), count=max(count, 2 * batch))
        config = pipeline_config(ir_path, vi_path, batch, str(fuser.device), streams)
        if fuser.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(fuser.device)
        summary = run_pipeline(config, fuser=fuser)
    return Measurement(
        path=path,
        device=str(fuser.device),
        resolution="{}x{}".format(*frames.size),
        batch=batch,
        streams=streams,
        frames=int(summary.frames_out),
        wall_s=float(summary.wall_s),
        fps=float(summary.fps),
        latency_ms_frame_p50=float(summary.latency_ms_p50),  # capture to end of the pipeline, per frame
        latency_ms_frame_p99=float(summary.latency_ms_p99),
        peak_cuda_mb=torch.cuda.max_memory_allocated(fuser.device) / 2**20 if fuser.device.type == "cuda" else None,
        peak_rss_mb=peak_rss_mb(),
        extra={"dropped": int(summary.dropped), "unpaired": int(summary.unpaired)},
    )


def pipeline_config(ir_path: Path, vi_path: Path, batch: int, device: str, streams: int = 1) -> PipelineConfig:
    """The pipeline config for ``streams`` copies of a file pair with no sinks (fused frames are discarded)."""
    pair = {"ir": {"kind": "video", "path": str(ir_path)}, "visible": {"kind": "video", "path": str(vi_path)}}
    data = {
        "streams": [{"id": f"bench{i}", **pair} for i in range(streams)],
        "model": {"batch_size": batch, "device": device},
        "sinks": [],
        "run": {"mode": "file", "progress": False, "stats_interval_s": 3600},
    }
    return from_dict(PipelineConfig, data)


def write_clip(frames: Frames, folder: Path, count: int, fps: int = 30) -> tuple[Path, Path]:
    """The frames, cycled to ``count``, as ir.mp4 and vi.mp4 (MPEG-4 part 2, high quality: fast to decode)."""
    paths = folder / "ir.mp4", folder / "vi.mp4"
    for path, images in zip(paths, (frames.ir, frames.visible)):
        with VideoWriter(path, fps, codec="mpeg4", crf=None, preset=None, options={"qscale": "2"}) as writer:
            for index in range(count):
                writer.write_image(images[index % len(images)])
    return paths


# --- reporting ---------------------------------------------------------------------------


def machine_info(devices: list[torch.device]) -> dict:
    cpu = _cpu_name()
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "python": platform.python_version(),
        "gpus": [torch.cuda.get_device_name(d) for d in devices if d.type == "cuda"],
    }
    gpus = f", {', '.join(info['gpus'])}" if info["gpus"] else ""
    info["summary"] = f"{cpu} ({info['cpu_count']} cores, {info['torch_threads']} torch threads){gpus}, torch {torch.__version__}"
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_COLUMNS = (
    ("device", 6),
    ("size", 9),
    ("path", 15),
    ("batch", 5),
    ("streams", 7),
    ("fps", 8),
    ("frame p50 ms", 12),
    ("frame p99 ms", 12),
    ("call p50 ms", 11),
    ("call p99 ms", 11),
    ("CUDA MB", 8),
    ("RSS MB", 7),
    ("x ref", 6),
)


def format_table(results: list[Measurement]) -> str:
    """Aligned plain-text table; ``x ref`` is fps over the reference's at the same device and size."""
    reference_fps = {(r.device, r.resolution): r.fps for r in results if r.path == "reference" and r.fps > 0}
    lines = ["  ".join(name.rjust(width) for name, width in _COLUMNS)]
    skipped = []
    for r in results:
        if r.skipped:
            skipped.append(f"{r.path}: {r.skipped}")
            continue
        ratio = r.fps / reference_fps[(r.device, r.resolution)] if (r.device, r.resolution) in reference_fps else None
        cells = (
            r.device,
            r.resolution,
            r.path,
            str(r.batch),
            str(r.streams),
            f"{r.fps:.2f}",
            _ms(r.latency_ms_frame_p50),
            _ms(r.latency_ms_frame_p99),
            _ms(r.latency_ms_call_p50),
            _ms(r.latency_ms_call_p99),
            _ms(r.peak_cuda_mb, "{:.0f}"),
            f"{r.peak_rss_mb:.0f}",
            f"{ratio:.2f}" if ratio is not None else "-",
        )
        lines.append("  ".join(cell.rjust(width) for cell, (_, width) in zip(cells, _COLUMNS)))
    ratios = same_run_ratios(results)
    if ratios:
        lines += ["", "ratios in this run (the targets: passthrough >= 0.5x decode, pipeline >= 0.95x model):"]
        lines += [f"  {r['device']} {r['resolution']} batch {r['batch']} streams {r['streams']}: {r['of']}/{r['over']} {r['ratio']:.2f}x" for r in ratios]
    if skipped:
        lines += ["", "not measured:"] + [f"  {line}" for line in dict.fromkeys(skipped)]
    return "\n".join(lines)


# The pipeline's own cost, as ratios of two paths measured in the same run (a noisy machine
# shifts both): passthrough over decode (decode is measured once, at batch 1), pipeline over model.
_RATIOS = (("passthrough", "decode"), ("pipeline", "model"))


def same_run_ratios(results: list[Measurement]) -> list[dict]:
    """One record per ratio: ``of``/``over`` paths, device, resolution, batch, streams, ratio."""
    measured = [r for r in results if not r.skipped and r.fps > 0]
    out = []
    for of, over in _RATIOS:
        for r in (m for m in measured if m.path == of):
            match_batch = over != "decode"  # decode has no batch: one measurement serves every batch size
            base = next((m for m in measured if m.path == over and (m.device, m.resolution, m.streams) == (r.device, r.resolution, r.streams)
                         and (not match_batch or m.batch == r.batch)), None)
            if base is not None:
                out.append({"of": of, "over": over, "device": r.device, "resolution": r.resolution, "batch": r.batch,
                            "streams": r.streams, "ratio": r.fps / base.fps})
    return out


def _ms(value: float | None, pattern: str = "{:.1f}") -> str:
    return "-" if value is None else pattern.format(value)
