"""``ldfusion bench``: fused frames per second, latency and peak memory, measured side by side.

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

Latency is per call (a batch; one frame for the reference) and per frame (call / batch);
p50 and p99 over the timed calls. Peak memory: CUDA ``max_memory_allocated`` per
measurement, and the process's peak resident set size (``ru_maxrss``, which only grows).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch

from ldfusion.cli.common import add_logging_arguments, one_line_errors, setup_logging
from ldfusion.errors import ConfigError
from ldfusion.inference import Fuser, FuserOptions, resolve_device
from ldfusion.networks import FusionNet
from ldfusion.variants import VARIANTS

log = logging.getLogger("ldfusion.bench")

PATHS = ("reference", "model", "model_on_device", "pipeline")
DEFAULT_RESOLUTIONS = ("640x480", "1280x720")
_DISTINCT_FRAMES = 8  # the synthetic clip cycles through this many frames


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldfusion bench",
        description="Measure fused frames per second, p50/p99 latency and peak memory for the authors' "
        "per-frame reference path, the model alone (Fuser) and the whole streaming pipeline, on the same "
        "synthetic frames in one run, on the CPU and on CUDA when present. Prints a table with the "
        "speed-ups over the reference and writes the numbers as JSON.",
    )
    parser.add_argument("--weights", default=None, help="weights file or registry name (default: the bundled 'default')")
    parser.add_argument("--model", choices=sorted(VARIANTS), help="network variant (default: read from the weights)")
    parser.add_argument(
        "--resolutions", nargs="+", default=list(DEFAULT_RESOLUTIONS), metavar="WxH", help="frame sizes (default: 640x480 1280x720)"
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4], metavar="N", help="batch sizes (default: 1 4)")
    parser.add_argument("--devices", nargs="+", help="devices to measure (default: cpu, and cuda when present)")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), help="what to measure (default: all)")
    parser.add_argument("--frames", type=int, default=16, help="timed frames per measurement (default: 16)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before each measurement (default: 2)")
    parser.add_argument("--fp32", action="store_true", help="keep the model and pipeline in float32 on CUDA (default: half)")
    parser.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON output (default: bench.json)")
    add_cpu_backend_arguments(parser)
    add_logging_arguments(parser)
    return parser


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


class PipelineUnavailable(Exception):
    """The streaming pipeline cannot be measured here; the message says why."""


@one_line_errors("ldfusion bench")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    _check_arguments(args)
    from ldfusion.weights import resolve_model  # late: the registry imports checkpoint I/O

    model = resolve_model(args.weights, args.model)
    devices = [resolve_device(name) for name in (args.devices or _default_devices())]
    resolutions = [parse_resolution(text) for text in args.resolutions]

    pipeline_problem = pipeline_unavailable_reason() if "pipeline" in args.paths else None
    if pipeline_problem:
        log.warning("pipeline not measured: %s", pipeline_problem)

    results: list[Measurement] = []
    for device in devices:
        for width, height in resolutions:
            frames = synthetic_frames(width, height)
            results += measure_all(model, device, frames, args, pipeline_problem)
    report = {"machine": machine_info(devices), "settings": _settings(args, model), "results": [asdict(r) for r in results]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(results))
    print(f"\n{report['machine']['summary']}; JSON written to {args.out}")
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    if args.frames < 1 or args.warmup < 0:
        raise ConfigError(f"--frames must be at least 1 and --warmup at least 0; got {args.frames} and {args.warmup}")
    if any(batch < 1 for batch in args.batch_sizes):
        raise ConfigError(f"batch sizes must be at least 1; got {args.batch_sizes}")


def _default_devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def parse_resolution(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"resolution must look like 640x480; got {text!r}") from None
    if width < 8 or height < 8:
        raise ConfigError(f"resolution must be at least 8x8; got {text!r}")
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


def measure_all(
    model: FusionNet, device: torch.device, frames: Frames, args: argparse.Namespace, pipeline_problem: str | None = None
) -> list[Measurement]:
    """Every chosen path at one device and resolution; the reference once, the others per batch size.

    ``pipeline_problem``: why the pipeline cannot run here (recorded instead of measuring it).
    """
    results = []
    log.info("measuring on %s at %dx%d", device, *frames.size)
    if "reference" in args.paths:
        results.append(measure_reference(model, device, frames, args.frames, args.warmup))
    fuser = Fuser(copy.deepcopy(model), FuserOptions(device=str(device), half=False if args.fp32 else None,
                                                     **cpu_backend_options(args)), weights_file(args))
    for batch in args.batch_sizes:
        if "model" in args.paths:
            results.append(measure_model(fuser, frames, batch, args.frames, args.warmup))
        if "model_on_device" in args.paths:
            results.append(measure_model_on_device(fuser, frames, batch, args.frames, args.warmup))
        if "pipeline" in args.paths:
            results.append(_pipeline_or_skip(fuser, frames, batch, args.frames, pipeline_problem))
    return results


# --- the CPU backend (ldfusion.backends), kept apart from the measurements -------------------


def add_cpu_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("auto", "torch", "openvino"), default="auto",
                        help="CPU runtime for the model and pipeline paths: auto = OpenVINO when installed (default: auto)")
    parser.add_argument("--int8", action="store_true", help="the OpenVINO int8 export (made by `ldfusion export --int8`)")


def cpu_backend_options(args: argparse.Namespace) -> dict:
    return {"backend": args.backend, "int8": args.int8}


def weights_file(args: argparse.Namespace) -> Path | None:
    """The weights file behind --weights, whose cached export the OpenVINO backend runs."""
    from ldfusion.weights import resolve_weights_path

    path = resolve_weights_path(args.weights)
    return path if path.is_file() else None


def _pipeline_or_skip(fuser: Fuser, frames: Frames, batch: int, count: int, problem: str | None) -> Measurement:
    if not problem:
        try:
            return measure_pipeline(fuser, frames, batch, count)
        except PipelineUnavailable as exc:
            problem = str(exc)
            log.warning("pipeline not measured: %s", problem)
    return Measurement("pipeline", str(fuser.device), "{}x{}".format(*frames.size), batch, skipped=problem)


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


def _import_pipeline():
    """The pipeline's entry points, imported only when measured: ``ldfusion`` never needs them."""
    try:
        from pipeline.config import PipelineConfig
        from pipeline.runner import run_pipeline
    except ImportError as exc:
        raise PipelineUnavailable(
            f"the streaming pipeline is not importable ({exc}); measured the reference and model paths only"
        ) from None
    return PipelineConfig, run_pipeline


def pipeline_unavailable_reason() -> str | None:
    try:
        _import_pipeline()
    except PipelineUnavailable as exc:
        return str(exc)
    return None


def measure_pipeline(fuser: Fuser, frames: Frames, batch: int, count: int) -> Measurement:
    """Run the whole pipeline (decode, pair, fuse; no sinks) on the clip written as two MP4 files."""
    config_class, run_pipeline = _import_pipeline()
    with tempfile.TemporaryDirectory(prefix="ldfusion-bench-") as folder:
        ir_path, vi_path = write_clip(frames, Path(folder), count=max(count, 2 * batch))
        config = pipeline_config(config_class, ir_path, vi_path, batch, str(fuser.device))
        if fuser.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(fuser.device)
        summary = run_pipeline(config, fuser=fuser)
    return Measurement(
        path="pipeline",
        device=str(fuser.device),
        resolution="{}x{}".format(*frames.size),
        batch=batch,
        frames=int(summary.frames_out),
        wall_s=float(summary.wall_s),
        fps=float(summary.fps),
        latency_ms_frame_p50=float(summary.latency_ms_p50),  # capture to end of the pipeline, per frame
        latency_ms_frame_p99=float(summary.latency_ms_p99),
        peak_cuda_mb=torch.cuda.max_memory_allocated(fuser.device) / 2**20 if fuser.device.type == "cuda" else None,
        peak_rss_mb=peak_rss_mb(),
        extra={"dropped": int(summary.dropped), "unpaired": int(summary.unpaired)},
    )


def pipeline_config(config_class: type, ir_path: Path, vi_path: Path, batch: int, device: str):
    """The pipeline config for a file pair with no sinks (fused frames are discarded)."""
    from ldfusion.config import from_dict

    data = {
        "streams": [{"id": "bench", "ir": {"kind": "video", "path": str(ir_path)}, "visible": {"kind": "video", "path": str(vi_path)}}],
        "model": {"batch_size": batch, "device": device},
        "sinks": [],
        "run": {"mode": "file", "progress": False},
    }
    try:
        return from_dict(config_class, data)
    except ConfigError as exc:
        raise PipelineUnavailable(f"could not build a pipeline config for the benchmark clip: {exc}") from None


def write_clip(frames: Frames, folder: Path, count: int, fps: int = 30) -> tuple[Path, Path]:
    """The frames, cycled to ``count``, as ir.mp4 (3 equal channels) and vi.mp4 (MPEG-4, high quality)."""
    import av  # late: only the pipeline measurement needs files

    paths = folder / "ir.mp4", folder / "vi.mp4"
    width, height = frames.size
    for path, images in zip(paths, (frames.ir, frames.visible)):
        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=Fraction(fps))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"qscale": "2"}
            for index in range(count):
                image = images[index % len(images)]
                rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
            container.mux(stream.encode(None))
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


def _settings(args: argparse.Namespace, model: FusionNet) -> dict:
    return {
        "model": model.spec.name,
        "weights": args.weights or "default",
        "frames": args.frames,
        "warmup": args.warmup,
        "half_on_cuda": not args.fp32,
        "paths": list(args.paths),
        **cpu_backend_options(args),
    }


_COLUMNS = (
    ("device", 6),
    ("size", 9),
    ("path", 15),
    ("batch", 5),
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
    if skipped:
        lines += ["", "not measured:"] + [f"  {line}" for line in dict.fromkeys(skipped)]
    return "\n".join(lines)


def _ms(value: float | None, pattern: str = "{:.1f}") -> str:
    return "-" if value is None else pattern.format(value)
