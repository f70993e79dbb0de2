"""``ldfusion eval``: score fused images (or a fused video) with the standard fusion metrics.

Inputs are paired by name as in ``ldfusion fuse``: ``--ir`` and ``--vi`` folders (or two
files) and a ``--fused`` folder holding ``NAME.png`` (any image type) for each pair. For
video, ``--ir``, ``--vi`` and ``--fused`` are three video files paired frame by frame.
With ``--fuse-with WEIGHTS`` the sources are fused first by that model instead.

Writes ``metrics.csv`` (one row per image or scored frame, written as it goes),
``metrics.json`` (the rows, their means and, for video, the temporal metrics) and
``metrics.md`` (the means as a Markdown table, also printed).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from ldfusion.cli.common import (
    add_cpu_runtime_arguments,
    add_logging_arguments,
    check_inputs_exist,
    one_line_errors,
    path_argument,
    setup_logging,
)
from ldfusion.cli.fuse import check_outputs
from ldfusion.errors import DataError
from ldfusion.imageio import IR_16BIT_MODES, ImagePair, list_images, looks_like_video, pair_folders, read_pair, read_visible, write_image
from ldfusion.metrics import METRIC_NAMES, evaluate_all
from ldfusion.paths import check_output_folder, refuse_overwriting_inputs
from ldfusion.temporal_metrics import TEMPORAL_NAMES, TemporalMeter
from ldfusion.variants import VARIANTS
from ldfusion.video import VideoReader
from ldfusion.weights import weights_names

log = logging.getLogger("ldfusion.eval")

SIDE_BY_SIDE_SUFFIX = "_sbs"  # what `ldfusion fuse --side-by-side` adds; not a fused image
_FRAME_RATE_TOLERANCE = 0.01
METRICS_FILES = ("metrics.csv", "metrics.json", "metrics.md")

# Options that mean something only for video, or only when eval fuses the sources itself.
# They default to None, not to their value, so that one the user gave is told from one left
# out: given where it does not apply (--every on images, --device with --fused), it is refused
# even at its default value. _fill_in_defaults sets the values once the checks are done.
VIDEO_OPTIONS = ("--every", "--max-frames", "--no-temporal")
FUSING_OPTIONS = ("--model", "--device", "--batch", "--int8", "--precision")
DEFAULTS = {"device": "auto", "batch": 4, "every": 1, "no_temporal": False}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldfusion eval",
        description="Score fused images with EN, SD, SF, AG, MI (bits), SCD, VIF, Qabf and SSIM "
        "(VIF and SSIM summed over the two sources; see ldfusion.metrics for each convention). "
        "Images: --ir and --vi folders paired by file name, and --fused holding NAME.<ext> for each "
        "pair. Video: --ir, --vi and --fused are video files paired frame by frame, and the "
        "temporal metrics (flicker, warping error) are added. Writes metrics.csv, metrics.json and "
        "metrics.md to --out and prints the table of means.",
    )
    parser.add_argument("--ir", required=True, type=path_argument, help="folder (or file, or video) of infrared sources")
    parser.add_argument("--vi", required=True, type=path_argument, help="folder (or file, or video) of visible sources")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--fused", type=path_argument, help="folder (or file, or video) of fused results to score")
    source.add_argument(
        "--fuse-with",
        metavar="WEIGHTS",
        help=f"fuse the sources first with these weights: a file, an Enc_*/Dec_* folder, or a registry name: {weights_names()}",
    )
    parser.add_argument("--model", choices=sorted(VARIANTS), help="network variant for --fuse-with (default: from the weights)")
    parser.add_argument(
        "--device", help=f"device for --fuse-with: auto, cpu, cuda or cuda:N (default: {DEFAULTS['device']})"
    )
    parser.add_argument("--batch", type=int, help=f"frames fused together with --fuse-with (default: {DEFAULTS['batch']})")
    add_cpu_runtime_arguments(parser)  # --int8, --precision for --fuse-with: score what `fuse` and `run` would write
    parser.add_argument("--save-fused", type=path_argument, help="with --fuse-with on images: also write the fused PNGs here")
    parser.add_argument("--overwrite", action="store_true", help="with --save-fused: replace fused PNGs already there (else the command refuses to start)")
    parser.add_argument("--out", required=True, type=path_argument, help="output folder for metrics.csv/.json/.md (created)")
    parser.add_argument("--name", help="method name in the tables (default: the fused folder or the weights)")
    parser.add_argument(
        "--every", type=int, help=f"video: score the image metrics on every N-th frame (default: {DEFAULTS['every']})"
    )
    parser.add_argument("--max-frames", type=int, help="video: stop after this many frames")
    parser.add_argument("--no-temporal", action="store_true", default=None, help="video: skip flicker and warping error")
    parser.add_argument(
        "--ir-16bit", choices=IR_16BIT_MODES, default="stretch", help="16-bit infrared handling, as in `ldfusion fuse`"
    )
    add_logging_arguments(parser)
    return parser


@dataclass(frozen=True)
class Sample:
    """One image or frame: its sources as read, and the fused result (uint8, RGB or gray)."""

    name: str
    visible: np.ndarray  # (H, W, 3) RGB or (H, W) uint8
    ir: np.ndarray  # (H, W) float32 in [0, 1]
    fused: np.ndarray | None = None


@one_line_errors("ldfusion eval")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    _check_arguments(args)
    _fill_in_defaults(args)
    video = looks_like_video(args.ir)
    pairs = None if video else pair_folders(args.ir, args.vi)  # unpaired names fail before the model loads
    if args.save_fused:  # images only (_check_arguments); fuse's own checks, under this option's name
        check_outputs(pairs, args.save_fused, with_sbs=False, overwrite=args.overwrite, option="--save-fused")
    fuser = _load_fuser(args) if args.fuse_with else None
    method = _method_name(args, fuser)
    args.out.mkdir(parents=True, exist_ok=True)
    _remove_summaries(args.out)

    with ExitStack() as stack:
        if video:
            samples, total, fps = _video_samples(args, stack)
        else:
            fused_paths = _match_fused_images(pairs, args.fused) if args.fused else None  # fail before any work
            samples, total, fps = _image_samples(pairs, fused_paths, args.ir_16bit), len(pairs), None
        if fuser is not None:
            samples = _fused_by(fuser, samples, args.batch, args.save_fused)
        report = score(
            samples, args.out / "metrics.csv", total, every=args.every if video else 1,
            temporal=video and not args.no_temporal, progress=not args.quiet,
        )

    report = {"method": method, "inputs": _describe_inputs(args, fuser), "frame_rate": fps, **report}
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown_tables(method, report)
    (args.out / "metrics.md").write_text(table + "\n")
    print(table)
    log.info("wrote metrics.csv, metrics.json and metrics.md to %s", args.out)
    return 0


def _remove_summaries(out: Path) -> None:
    """Delete an earlier run's metrics.json and metrics.md: this run rewrites metrics.csv as it
    goes, so if it fails part-way, summaries left from before would disagree with its rows."""
    for name in METRICS_FILES[1:]:
        (out / name).unlink(missing_ok=True)


def _check_arguments(args: argparse.Namespace) -> None:
    """The command line first (nothing read yet), then the paths it names."""
    _check_counts(args)
    _check_name(args.name)
    _check_weights_named(args.fuse_with)
    _check_all_videos_or_all_images(args)
    _refuse_options_that_do_not_apply(args, looks_like_video(args.ir))
    check_inputs_exist({"--ir": args.ir, "--vi": args.vi, "--fused": args.fused})
    check_output_folder(args.out)
    _check_metrics_apart_from_inputs(args)
    if args.save_fused:
        check_output_folder(args.save_fused, "--save-fused")  # made only when the first image is fused


def _dest(option: str) -> str:
    return option.removeprefix("--").replace("-", "_")


def _first_given(args: argparse.Namespace, options: tuple[str, ...]) -> str | None:
    """The first of ``options`` on the command line (they default to None, whatever their value)."""
    return next((option for option in options if getattr(args, _dest(option)) is not None), None)


def _check_counts(args: argparse.Namespace) -> None:
    for option in ("--batch", "--every", "--max-frames"):
        value = getattr(args, _dest(option))
        if value is not None and value < 1:
            raise DataError(f"{option} must be at least 1; got {value}")


def _check_name(name: str | None) -> None:
    """--name is the first cell of the tables: a blank one fell back to the folder's name without
    a word, and a line break splits the Markdown row (and the printed table) in two."""
    if name is None:
        return
    if not name.strip():
        raise DataError("--name is empty; give the method's name, or leave --name out to name it after --fused or the weights")
    if name.splitlines() != [name]:
        raise DataError(f"--name {name!r} holds a line break, which would split the table's row; give it on one line")


def _check_weights_named(fuse_with: str | None) -> None:
    """An empty --fuse-with (an unset shell variable) was taken for no --fuse-with, and eval
    then failed on the --fused it did not have."""
    if fuse_with is not None and not fuse_with.strip():
        raise DataError(f"--fuse-with is empty; give a weights file or folder, or one of: {weights_names()}")


def _check_all_videos_or_all_images(args: argparse.Namespace) -> None:
    kinds = {path: looks_like_video(path) for path in (args.ir, args.vi, args.fused) if path is not None}
    if len(set(kinds.values())) > 1:
        listing = ", ".join(f"{path} ({'video' if is_video else 'images'})" for path, is_video in kinds.items())
        raise DataError(f"--ir, --vi and --fused must all be videos or all be images; got {listing}")


def _refuse_options_that_do_not_apply(args: argparse.Namespace, video: bool) -> None:
    """An option that cannot act is refused, not ignored: `--every 10` on images, or `--device cuda`
    while scoring --fused results, ran without a word and left the user believing it had acted."""
    video_option = _first_given(args, VIDEO_OPTIONS)
    if video_option and not video:
        raise DataError(f"{video_option} applies to video only, and these inputs are images; leave it out")
    fusing_option = _first_given(args, FUSING_OPTIONS)
    if fusing_option == "--int8" and args.int8 is False:  # named as typed
        fusing_option = "--no-int8"
    if fusing_option and not args.fuse_with:
        raise DataError(f"{fusing_option} sets up the fusing of --fuse-with, and --fused scores results already fused; leave it out")
    if args.overwrite and not args.save_fused:  # metrics files are always replaced
        raise DataError("--overwrite replaces the fused PNGs of --save-fused; without it there is nothing to overwrite")
    if args.save_fused and (not args.fuse_with or video):
        raise DataError("--save-fused needs --fuse-with on images (for video, `ldfusion run` writes the fused MP4)")


def _fill_in_defaults(args: argparse.Namespace) -> None:
    for dest, default in DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)


def _method_name(args: argparse.Namespace, fuser) -> str:
    if args.name is not None:  # not blank (_check_name)
        return args.name
    return f"{fuser.spec.name} ({args.fuse_with})" if fuser else _stem_or_name(args.fused)


def _check_metrics_apart_from_inputs(args: argparse.Namespace) -> None:
    """A metrics file in --out may be another name (a link) for an input video or image, which
    writing it would truncate while it is read. A folder's images are checked one by one."""
    inputs = [path for given in (args.ir, args.vi, args.fused) if given is not None
              for path in (list_images(given).values() if given.is_dir() else [given])]
    refuse_overwriting_inputs([args.out / name for name in METRICS_FILES], inputs, f"--out {args.out}")
    for name in METRICS_FILES:  # found at the write, after the earlier summaries were deleted
        if (args.out / name).is_dir():
            raise DataError(f"--out {args.out}: {args.out / name} is a folder where {name} goes; move it, or choose another --out")


def _stem_or_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def _load_fuser(args: argparse.Namespace):
    from ldfusion.inference import Fuser, FuserOptions  # late: only --fuse-with needs torch models

    options = FuserOptions(device=args.device, int8=args.int8, precision=args.precision or "auto")
    return Fuser.from_weights(args.fuse_with, args.model, options)


def _describe_inputs(args: argparse.Namespace, fuser) -> dict:
    inputs = {"ir": str(args.ir), "vi": str(args.vi)}
    if fuser is not None:
        inputs.update(fused_with=str(args.fuse_with), model=fuser.spec.name, device=str(fuser.device), backend=fuser.backend,
                      int8=fuser.int8)
    else:
        inputs["fused"] = str(args.fused)
    return inputs


# --- images ------------------------------------------------------------------------------


def _image_samples(pairs: list[ImagePair], fused_paths: dict[str, Path] | None, ir_16bit: str) -> Iterator[Sample]:
    for pair in pairs:
        visible, ir = read_pair(pair, ir_16bit)
        fused = read_visible(fused_paths[pair.name]) if fused_paths is not None else None
        if fused is not None:
            _check_same_size(pair.name, fused.shape[:2], visible.shape[:2], "fused", "sources")
        yield Sample(pair.name, visible, ir, fused)


def _match_fused_images(pairs: list[ImagePair], fused: Path) -> dict[str, Path]:
    """Fused image for each pair by name; anything missing or left over is an error."""
    if fused.is_file():
        if len(pairs) != 1:
            raise DataError(f"--fused is a single file ({fused}) but there are {len(pairs)} source pairs")
        return {pairs[0].name: fused}
    images = list_images(fused)
    names = {pair.name for pair in pairs}
    missing = [pair.name for pair in pairs if pair.name not in images]
    if missing:
        raise DataError(f"{len(missing)} pair(s) have no fused image in {fused} (first: {missing[0]})")
    extra = sorted(
        stem
        for stem in images
        if stem not in names and not (stem.endswith(SIDE_BY_SIDE_SUFFIX) and stem[: -len(SIDE_BY_SIDE_SUFFIX)] in names)
    )
    if extra:
        raise DataError(f"{len(extra)} fused image(s) in {fused} have no source pair (first: {images[extra[0]].name})")
    return {name: images[name] for name in names}


def _check_same_size(name: str, shape_a: tuple, shape_b: tuple, what_a: str, what_b: str) -> None:
    if tuple(shape_a) != tuple(shape_b):
        raise DataError(
            f"{name}: {what_a} and {what_b} differ in size: {shape_a[1]}x{shape_a[0]} vs {shape_b[1]}x{shape_b[0]}"
        )


# --- video -------------------------------------------------------------------------------


def _video_samples(args: argparse.Namespace, stack: ExitStack) -> tuple[Iterator[Sample], int | None, float | None]:
    """Frame triples of the IR, visible (and fused) videos, with the count to expect and the rate."""
    ir = stack.enter_context(VideoReader(args.ir, luma_only=True, ir_16bit=args.ir_16bit))  # deep video by the same rule as images
    vi = stack.enter_context(VideoReader(args.vi))
    fused = stack.enter_context(VideoReader(args.fused)) if args.fused else None
    _check_frame_rates(ir, vi, "ir", "vi")
    if fused is not None:
        _check_frame_rates(fused, vi, "fused", "vi")
    ir_n, vi_n = ir.declared_frames, vi.declared_frames
    if ir_n and vi_n and ir_n != vi_n:
        log.warning("ir has %d frames and vi %d; pairing the first %d by frame number", ir_n, vi_n, min(ir_n, vi_n))
    expected = min(ir_n, vi_n) if ir_n and vi_n else None
    if fused is not None and fused.declared_frames and expected and _frame_counts_disagree(fused.declared_frames, expected, args.max_frames):
        raise DataError(f"{args.fused} has {fused.declared_frames} frames but the ir/vi pair has {expected}; they must match")
    total = min(expected, args.max_frames) if expected and args.max_frames else expected or args.max_frames
    return _paired_frames(ir, vi, fused, args.max_frames), total, float(vi.rate) if vi.rate_stated else None


def _frame_counts_disagree(fused: int, pair: int, limit: int | None) -> bool:
    """With --max-frames only the first ``limit`` need a fused frame: `run` with run.max_frames
    fused that many, and eval refused its output ('has 4 frames but the ir/vi pair has 8')."""
    return fused != pair if limit is None else fused < min(pair, limit)


def _check_frame_rates(a: VideoReader, b: VideoReader, name_a: str, name_b: str) -> None:
    rate_a, rate_b = float(a.rate), float(b.rate)
    if a.rate_stated and b.rate_stated and abs(rate_a - rate_b) > _FRAME_RATE_TOLERANCE * rate_b:
        raise DataError(f"{name_a} and {name_b} videos have different frame rates: {rate_a:g} vs {rate_b:g} fps")


def _paired_frames(ir: VideoReader, vi: VideoReader, fused: VideoReader | None, limit: int | None) -> Iterator[Sample]:
    """IR frames are (H, W) luma, visible and fused (H, W, 3) RGB (``ldfusion.color``'s conversion)."""
    ir_frames, vi_frames = ir.images(), vi.images()
    fused_frames = fused.images() if fused is not None else None
    index = 0
    while limit is None or index < limit:
        ir_luma, vi_rgb = next(ir_frames, None), next(vi_frames, None)
        if ir_luma is None or vi_rgb is None:
            break
        fused_rgb = next(fused_frames, None) if fused_frames is not None else None
        name = f"frame_{index:06d}"
        if fused_frames is not None and fused_rgb is None:
            raise DataError(f"{fused.path} ended after {index} frames, before the ir/vi pair")
        _check_same_size(f"frame {index} of {ir.path} and {vi.path}", ir_luma.shape[:2], vi_rgb.shape[:2], "ir", "vi")
        if fused_rgb is not None:
            fused_rgb = _without_even_padding(fused_rgb, vi_rgb.shape[:2])
            _check_same_size(f"frame {index} of {fused.path}", fused_rgb.shape[:2], vi_rgb.shape[:2], "fused", "sources")
        ir_gray = ir_luma.astype(np.float32) / 255.0
        yield Sample(name, vi_rgb, ir_gray, fused_rgb)
        index += 1
    if limit is None and fused_frames is not None and next(fused_frames, None) is not None:
        raise DataError(f"{fused.path} has more frames than the ir/vi pair ({index})")


def _without_even_padding(fused: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A fused video of odd-sized sources carries the writer's row or column of padding
    (4:2:0 needs even sides, ``ldfusion.video``): cropped off, so `run`'s own output scores."""
    height, width = size
    if fused.shape[:2] == (height + height % 2, width + width % 2):
        return fused[:height, :width]
    return fused


# --- fusing first ----------------------------------------------------------------------


def _fused_by(fuser, samples: Iterable[Sample], batch: int, save_to: Path | None) -> Iterator[Sample]:
    """Fill in ``fused`` by running the model on same-size batches of samples."""
    if save_to is not None:
        save_to.mkdir(parents=True, exist_ok=True)
    for group in _same_size_batches(samples, batch):
        fused = fuser.fuse_arrays([s.visible for s in group], [s.ir for s in group])
        for sample, image in zip(group, fused):
            if save_to is not None:
                write_image(save_to / f"{sample.name}.png", image)
            yield Sample(sample.name, sample.visible, sample.ir, image)


def _same_size_batches(samples: Iterable[Sample], batch: int) -> Iterator[list[Sample]]:
    group: list[Sample] = []
    for sample in samples:
        if group and (len(group) == batch or sample.visible.shape != group[0].visible.shape):
            yield group
            group = []
        group.append(sample)
    if group:
        yield group


# --- scoring and reporting -------------------------------------------------------------


def luma_255(image: np.ndarray) -> np.ndarray:
    """uint8 RGB or gray -> (H, W) float64 luma rounded to integer levels, as the evaluators read images."""
    if image.ndim == 2:
        return image.astype(np.float64)
    return np.rint(cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2GRAY)).astype(np.float64)


def score(
    samples: Iterable[Sample], csv_path: Path, total: int | None, every: int = 1, temporal: bool = False, progress: bool = True
) -> dict:
    """Score each sample, appending rows to ``csv_path`` as they come; returns the JSON report body."""
    rows: list[dict] = []
    meter = TemporalMeter() if temporal else None
    # A fresh file: a link planted at csv_path (soft or hard) was written through, overwriting
    # the file it shares. (Rows are written as they come, so not through ``replaced_whole``.)
    csv_path.unlink(missing_ok=True)
    with csv_path.open("w", newline="") as handle, tqdm(
        total=total, unit="image", desc="eval", disable=True if not progress else None  # None: only on a terminal
    ) as bar:
        writer = csv.DictWriter(handle, fieldnames=["name", *METRIC_NAMES])
        writer.writeheader()
        for index, sample in enumerate(samples):
            fused, ir, vi = luma_255(sample.fused), np.rint(sample.ir.astype(np.float64) * 255.0), luma_255(sample.visible)
            if meter is not None:
                meter.update(fused, ir, vi)
            if index % every == 0:
                try:
                    row = {"name": sample.name, **evaluate_all(fused, ir, vi)}
                except ValueError as exc:  # e.g. an image too small for the SSIM window
                    raise DataError(f"{sample.name}: {exc}") from None
                writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
                handle.flush()  # rows already scored survive a later error
                rows.append(row)
            bar.update(1)
    if not rows:
        raise DataError("nothing to score: the inputs hold no images or frames")
    report: dict = {"count": len(rows), "mean": _means(rows), "std": _stds(rows), "images": rows}
    if meter is not None:
        scores = meter.result()
        if scores.frames < 2:  # flicker and warping error compare consecutive frames: one frame scored perfect
            log.warning("temporal metrics need two frames or more; the video gave %d, so they are left out", scores.frames)
        else:
            report["temporal"] = scores.as_dict()
    return report


def _means(rows: list[dict]) -> dict[str, float]:
    return {name: float(np.mean([row[name] for row in rows])) for name in METRIC_NAMES}


def _stds(rows: list[dict]) -> dict[str, float]:
    return {name: float(np.std([row[name] for row in rows])) for name in METRIC_NAMES}


def markdown_tables(method: str, report: dict) -> str:
    """The means (and, for video, the temporal metrics) as Markdown tables."""
    header = ["method", "n", *METRIC_NAMES]
    values = [method, str(report["count"]), *(_fmt(report["mean"][name]) for name in METRIC_NAMES)]
    lines = [_md_row(header), _md_row(["---"] * len(header)), _md_row(values)]
    temporal = report.get("temporal")
    if temporal:
        header = ["method", "frames", *TEMPORAL_NAMES]
        values = [method, str(temporal["frames"]), *(_fmt(temporal[name]) for name in TEMPORAL_NAMES)]
        lines += ["", _md_row(header), _md_row(["---"] * len(header)), _md_row(values)]
    return "\n".join(lines)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(map(_md_cell, cells)) + " |"


def _md_cell(text: str) -> str:
    """Text kept inside its cell: a bare '|' ends the cell (a method named 'a|b' added a column)
    and a line break ends the row. The method may be a folder's or a weights path's name, which
    --name's checks do not reach, so both are made safe here too."""
    return " ".join(text.splitlines()).replace("|", r"\|")


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"
