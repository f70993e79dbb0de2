"""``ldfusion demo``: the main job on inputs that are always at hand.

Runs the streaming pipeline on a recorded M3SVD pair when ``../shared/data/video/m3svd``
is present, and otherwise on a short paired clip that ldfusion renders itself. Writes
``fused.mp4``, ``side_by_side.mp4`` (IR | visible | fused) and ``preview.png`` (one
side-by-side frame), with the bundled default weights unless told otherwise.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ldfusion.cli.common import add_cpu_runtime_arguments, add_logging_arguments, one_line_errors, path_argument, setup_logging
from ldfusion.color import planes_to_image
from ldfusion.config import saved_mapping
from ldfusion.errors import ConfigError, DataError
from ldfusion.imageio import check_image_destination, write_image
from ldfusion.paths import check_output_folder
from ldfusion.synthetic import write_paired_clip
from ldfusion.video import VideoReader
from pipeline.config import RUN_ARTEFACTS, ModelConfig, PipelineConfig, RunConfig, SinkConfig, SourceConfig, StreamConfig
from pipeline.runner import run_pipeline

log = logging.getLogger("ldfusion.demo")

M3SVD_PAIR = "0111_1716"  # the shortest recorded pair: 151 frames at 30 fps, 640x480
SOURCES = ("auto", "m3svd", "synthetic")
PREVIEW = "preview.png"
FUSED, SIDE_BY_SIDE = "fused.mp4", "side_by_side.mp4"
DEMO_STREAM = "demo"
SYNTHETIC_INPUTS = "input"  # the folder the rendered clip is written to


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldfusion demo",
        description="Fuse a paired IR/visible clip with the streaming pipeline and write fused.mp4, "
        "side_by_side.mp4 (IR | visible | fused) and preview.png. Uses the M3SVD clip in "
        "../shared/data/video/m3svd when present, else a clip that ldfusion renders itself.",
    )
    parser.add_argument("--out", type=path_argument, default=Path("demo_out"), help="output folder (default: demo_out)")
    parser.add_argument("--source", choices=SOURCES, default="auto", help="auto (M3SVD if present), m3svd or synthetic")
    parser.add_argument("--m3svd", type=path_argument, default=None, help="M3SVD folder (default: ../shared/data/video/m3svd)")
    parser.add_argument("--weights", default=None, help="weights file or registry name: auto, fast, default, ld-lite, ldfusion (default: auto, chosen per device and logged)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many fused frames")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files of the demo's names in --out that an earlier demo did not write "
                             "(an earlier demo's outputs are always replaced)")
    add_cpu_runtime_arguments(parser)
    add_logging_arguments(parser)
    return parser


def find_m3svd(explicit: Path | None) -> Path | None:
    """The M3SVD folder: as given, or beside the current directory or the repository."""
    candidates = [explicit] if explicit else [
        Path("../shared/data/video/m3svd"),
        Path(__file__).resolve().parents[2] / "shared" / "data" / "video" / "m3svd",
    ]
    for folder in candidates:
        if (folder / "infrared" / f"{M3SVD_PAIR}.mp4").is_file() and (folder / "visible" / f"{M3SVD_PAIR}.mp4").is_file():
            return folder
    if explicit:
        raise DataError(f"{explicit}: no infrared/{M3SVD_PAIR}.mp4 and visible/{M3SVD_PAIR}.mp4 there")
    return None


def choose_inputs(args: argparse.Namespace) -> tuple[str, Path, Path]:
    """(description, ir video, visible video) for the chosen source."""
    m3svd = None if args.source == "synthetic" else find_m3svd(args.m3svd)
    if m3svd is not None:
        return f"M3SVD pair {M3SVD_PAIR}", m3svd / "infrared" / f"{M3SVD_PAIR}.mp4", m3svd / "visible" / f"{M3SVD_PAIR}.mp4"
    if args.source == "m3svd":
        raise DataError("no M3SVD clips found in ../shared/data/video/m3svd; pass --m3svd DIR or --source synthetic")
    ir, visible = write_paired_clip(args.out / SYNTHETIC_INPUTS)
    return "a synthetic clip rendered by ldfusion", ir, visible


def demo_config(args: argparse.Namespace, ir: Path, visible: Path) -> PipelineConfig:
    try:
        return _demo_config(args, ir, visible)
    except ValueError as exc:  # what a config file's loader names as a config error (it said "error: ValueError: ...", exit 1)
        raise ConfigError(str(exc)) from None


def _demo_config(args: argparse.Namespace, ir: Path, visible: Path) -> PipelineConfig:
    return PipelineConfig(
        streams=(StreamConfig(id=DEMO_STREAM, ir=SourceConfig(kind="video", path=str(ir)), visible=SourceConfig(kind="video", path=str(visible))),),
        model=ModelConfig(weights=args.weights, device=args.device, int8=args.int8, precision=args.precision or "auto"),
        sinks=(
            # The encoders share the two cores of a small machine with the network, so the demo
            # trades file size for CPU. fused.mp4 at x264's superfast: 3.6 ms of CPU a frame
            # against 6.2 at veryfast (the default), Y PSNR at crf 18 41.0 against 40.5 dB, the
            # file 29% larger; the demo 25.7-26.7 fps against 24.7-25.5, 5 interleaved pairs.
            SinkConfig(kind="mp4", path=FUSED, preset="superfast"),
            # A preview three frames wide: x264's ultrafast preset. At veryfast it took 12.4 ms of
            # CPU a frame (2-core EPYC), a third of what the network takes, at ultrafast 3.6 ms
            # for a file 2.4 times as large.
            SinkConfig(kind="mp4", path=SIDE_BY_SIDE, content="side_by_side", preset="ultrafast"),
        ),
        # Checked by ``check_earlier_outputs``: the demo replaces its own files, and others only when told.
        run=RunConfig(out_dir=str(args.out), mode="file", max_frames=args.max_frames, progress=not args.quiet, overwrite=True),
    )


def check_earlier_outputs(out: Path, overwrite: bool) -> None:
    """Files of the demo's names already in ``out`` are replaced only when an earlier demo wrote
    them or with ``--overwrite``: the demo overwrote a user's preview.png, config.yaml and
    summary.json with no word (it has always replaced its own outputs, and still does)."""
    files = (FUSED, SIDE_BY_SIDE, PREVIEW, *RUN_ARTEFACTS)
    for name in files:  # no --overwrite could help: it said "pass --overwrite", then "is a folder" or "sink path ... run.out_dir"
        path = out / name
        if path.is_symlink() or path.is_dir():
            what = "a link" if path.is_symlink() else "a folder"
            raise ConfigError(f"--out {out}: {name} is {what}, where the demo writes a file; move it away, or choose another --out")
    taken = [name for name in (*files, SYNTHETIC_INPUTS) if (out / name).exists()]
    if taken and not overwrite and not _written_by_a_demo(out / "config.yaml"):
        raise ConfigError(f"--out {out} holds {', '.join(taken)}, not from an earlier demo; "
                          "pass --overwrite to replace them, or choose another --out")


def _written_by_a_demo(config_file: Path) -> bool:
    """Whether ``config_file`` is the config an earlier demo saved (its one stream and two sinks)."""
    data = saved_mapping(config_file) or {}
    try:
        streams, sinks = data["streams"], data["sinks"]
        return [s["id"] for s in streams] == [DEMO_STREAM] and sorted(s["path"] for s in sinks) == sorted((FUSED, SIDE_BY_SIDE))
    except (TypeError, KeyError):  # a mapping of another shape
        return False


def write_preview(video: Path, target: Path, frames: int) -> Path:
    """Save the middle frame of ``video``, which holds ``frames`` frames, as a PNG.

    Decodes up to that frame and keeps only the last one decoded: the whole clip in memory
    would be 200 MB for the 151 frames of the default demo, and grows with --max-frames.
    """
    middle = max(frames, 1) // 2
    last = None
    with VideoReader(video) as reader:
        for index, frame in enumerate(reader):
            last = frame
            if index >= middle:
                break
    if last is None:
        raise DataError(f"{video} holds no frame to preview")
    write_image(target, planes_to_image(last.planes))
    return target


@one_line_errors("ldfusion demo")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be at least 1; got {args.max_frames}")
    check_output_folder(args.out)
    check_image_destination(args.out / PREVIEW)  # written last: a folder in its place would cost the whole run
    check_earlier_outputs(args.out, args.overwrite)
    args.out.mkdir(parents=True, exist_ok=True)
    description, ir, visible = choose_inputs(args)
    log.info("demo on %s", description)
    summary = run_pipeline(demo_config(args, ir, visible))
    preview = write_preview(args.out / SIDE_BY_SIDE, args.out / PREVIEW, summary.frames_out)
    print(f"fused {summary.frames_out} frames at {summary.fps:.1f} fps from {description}")
    print(f"wrote {args.out / FUSED}, {args.out / SIDE_BY_SIDE} and {preview}")
    return 0
