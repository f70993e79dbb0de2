"""``ldfusion calibrate``: estimate, store and verify the infrared -> visible registration.

Every estimating subcommand writes the registration YAML that ``ldfusion run`` reads
(see :mod:`calibration.fileformat`); ``verify`` shows how well a file lines the images up.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from calibration.fileformat import MAX_SIDE, CalibrationError, Registration, folds_reason, load_registration, save_registration
from calibration.imaging import SIZE_FORM, folds_the_frame, image_size, parse_size, size_ratio_homography
from calibration.scene import MAX_ROTATION_LIMITS_DEG, MAX_SCALE_LIMITS, MAX_SHIFT_LIMITS, SceneOptions, check_within
from calibration.target import MIN_VIEWS_FLOOR
from ldfusion.cli.common import add_logging_arguments, one_line_errors, path_argument, setup_logging
from ldfusion.errors import DataError
from ldfusion.imageio import (
    IMAGE_SUFFIXES,
    IR_16BIT_MODES,
    check_image_destination,
    looks_like_video,
    pair_folders,
    read_infrared,
    read_visible,
    write_image,
)
from ldfusion.paths import file_key, same_file

log = logging.getLogger("calibration.cli")
DEFAULT_SCENE_FRAMES = 5  # frame pairs of two videos: on the M3SVD clips five refined together land within ~1 px
PROG = "ldfusion calibrate"
# The largest board image `board` draws, pixels a side: 20000 px prints 85 cm at 600 dpi (the
# short side of A0), more than any target needs, and the image then stays under 400 MB.
MAX_BOARD_SIDE = 20000

EPILOG = """\
examples:
  ldfusion calibrate target --ir board/ir --vi board/vi --pattern 9x6 --out calib.yaml
  ldfusion calibrate target --ir board/ir --vi board/vi --pattern 7x5 --charuco DICT_5X5_100 --out calib.yaml
  ldfusion calibrate scene --ir ir.png --vi vi.png --out calib.yaml
  ldfusion calibrate scene --ir ir.mp4 --vi vi.mp4 --frames 5 --max-rotation 5 --out calib.yaml
  ldfusion calibrate points --file clicks.csv --ir-size 640x512 --vi-size 1920x1080 --out calib.yaml
  ldfusion calibrate offset --ir ir.mp4 --vi vi.mp4 --calib calib.yaml --out calib.yaml
  ldfusion calibrate verify --calib calib.yaml --ir ir.png --vi vi.png --out overlay.png
  ldfusion calibrate board --pattern 9x6 --out board.png
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Estimate how infrared pixels map onto visible pixels (a homography or affine map), "
        "and the delay between the two streams, and write them to the registration YAML that "
        "`ldfusion run` reads. Pick the subcommand that fits your rig; `verify` checks the result.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    _add_target(commands)
    _add_scene(commands)
    _add_points(commands)
    _add_offset(commands)
    _add_verify(commands)
    _add_board(commands)
    return parser


def _subparser(commands, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=summary, description=description, prog=f"{PROG} {name}")
    add_logging_arguments(sub)
    return sub


def _add_model(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--model",
        choices=("homography", "affine"),
        default="homography",
        help="homography (8 parameters, any planar view) or affine (6, no perspective) (default: homography)",
    )


def _add_confidence_gate(sub: argparse.ArgumentParser) -> None:
    """--min-confidence and --force, alike for every command that scores its answer (both thresholds are 0.5)."""
    sub.add_argument(
        "--min-confidence", type=float, default=None,
        help="refuse results below this confidence (allowed: 0 to 1, where 0 refuses nothing; default: 0.5)",
    )
    sub.add_argument("--force", action="store_true", help="write the result even when its confidence is too low")


def _add_ir_16bit(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--ir-16bit", choices=IR_16BIT_MODES, default="stretch", help="how to read 16-bit infrared (default: stretch)")


def _add_target(commands) -> None:
    sub = _subparser(
        commands,
        "target",
        "from images of a checkerboard or ChArUco board seen by both cameras",
        "Detect a checkerboard or ChArUco board in infrared/visible pairs (paired by file name, or "
        "two single files), fit infrared -> visible robustly (MAGSAC) and report the RMS reprojection "
        "error in visible pixels. Infrared boards may be inverted or faint: each image is "
        "contrast-stretched and searched in both polarities. With --min-views or more views the "
        "file also gets each camera's intrinsics and distortion and the stereo pose, under `cameras`. "
        "Hold the board at the working distance: one homography fits all depths only when the "
        "cameras are close together compared with the distance.",
    )
    sub.add_argument("--ir", required=True, type=path_argument, help="folder (or file) of infrared board images")
    sub.add_argument("--vi", required=True, type=path_argument, help="folder (or file) of visible board images")
    sub.add_argument(
        "--pattern",
        required=True,
        help="COLSxROWS: inner corners for a checkerboard (a 10x7-square board is 9x6); squares for ChArUco",
    )
    sub.add_argument("--charuco", metavar="DICT", help="the board is ChArUco with this ArUco dictionary, e.g. DICT_5X5_100")
    sub.add_argument("--square-size", type=float, default=1.0, help="square side in your unit, e.g. mm (scales the stereo T)")
    sub.add_argument("--marker-size", type=float, help="ChArUco marker side, same unit (default: 0.75 of a square)")
    sub.add_argument("--legacy-charuco", action="store_true", help="ChArUco board printed by OpenCV < 4.6 (even row count)")
    sub.add_argument("--min-views", type=int, default=4,
                     help=f"views with the board in both images needed for intrinsics, at least {MIN_VIEWS_FLOOR} (default: 4)")
    _add_model(sub)
    _add_ir_16bit(sub)
    sub.add_argument("--out", required=True, type=path_argument, help="registration YAML to write")
    sub.set_defaults(run=run_target)


def _add_scene(commands) -> None:
    sub = _subparser(
        commands,
        "scene",
        "from ordinary scene pairs, no target (global search, then robust tile fits on edges)",
        "Register the infrared image onto the visible one from the scene itself: a global search over "
        "the declared range of scale, rotation and shift (oriented edges, normalised correlation over "
        "every shift), then tile matching and robust fits, coarse to fine, from the best few candidates. "
        "The start is the frames stretched over each other, or --init. With two videos, N frame pairs "
        "are registered (--frames N, default 5): visible frames spread over the time both clips cover, each "
        "with the infrared frame nearest in time (infrared times plus --init's time_offset_s); the answer "
        "most of them agree on wins and is refined on all N at once (more shared structure: a steadier answer). A confidence "
        "from held-out tiles and from whether the answer stays put when refined on resampled images "
        "(over all the frames) decides: below --min-confidence the command exits 1 with the reason "
        "and writes nothing, unless --force.",
    )
    sub.add_argument("--ir", required=True, type=path_argument, help="infrared image, or video (.mp4, .mkv, ...: frame pairs are sampled)")
    sub.add_argument("--vi", required=True, type=path_argument, help="visible image, or video")
    sub.add_argument("--init", type=path_argument, help="a rough registration YAML to search around (e.g. from `points`)")
    sub.add_argument(
        "--frames", type=int,
        help=f"the inputs are videos: register this many frame pairs spread over their common time (default for videos: {DEFAULT_SCENE_FRAMES})",
    )
    sub.add_argument("--max-scale", type=float, default=1.25,
                     help=f"search scales from 1/this to this ({_limits(MAX_SCALE_LIMITS)}; default: 1.25)")
    sub.add_argument("--max-rotation", type=float, default=10.0,
                     help=f"search rotations within +- this many degrees ({_limits(MAX_ROTATION_LIMITS_DEG)}; default: 10)")
    sub.add_argument("--max-shift", type=float, default=0.15,
                     help=f"search shifts within +- this fraction of the visible width ({_limits(MAX_SHIFT_LIMITS)}; default: 0.15)")
    sub.add_argument("--max-width", type=int, default=640,
                     help=f"refine at most this wide, for speed; at least {SceneOptions.search_width}, the global search's width (default: 640)")
    _add_confidence_gate(sub)
    _add_model(sub)
    _add_ir_16bit(sub)
    sub.add_argument("--out", required=True, type=path_argument, help="registration YAML to write")
    sub.set_defaults(run=run_scene)


def _add_points(commands) -> None:
    sub = _subparser(
        commands,
        "points",
        "from hand-picked point pairs in a YAML or CSV file",
        "Fit infrared -> visible through clicked correspondences: at least 4 pairs for a homography, "
        "3 for affine, not all on one line. CSV rows are ir_x,ir_y,vi_x,vi_y (header optional); YAML "
        "has `points: [{ir: [x, y], vi: [x, y]}, ...]` and optional ir_size/vi_size. Prints the RMS "
        "error when there are more pairs than the model needs.",
    )
    sub.add_argument("--file", required=True, type=path_argument, help="point pairs, .yaml/.yml or .csv")
    sub.add_argument("--ir-size", help="infrared image size WxH (required unless the YAML gives ir_size)")
    sub.add_argument("--vi-size", help="visible image size WxH (required unless the YAML gives vi_size)")
    sub.add_argument("--robust", action="store_true", help="drop pairs that disagree with the rest (MAGSAC/RANSAC)")
    _add_model(sub)
    sub.add_argument("--out", required=True, type=path_argument, help="registration YAML to write")
    sub.set_defaults(run=run_points)


def _add_offset(commands) -> None:
    sub = _subparser(
        commands,
        "offset",
        "the constant delay between two recorded videos",
        "Estimate the delay between an infrared and a visible recording by cross-correlating their "
        "frame-to-frame motion energy, and write it as time_offset_s (added to infrared timestamps to "
        "put them on the visible clock) into the registration file. Needs something moving in view. "
        "A confidence (the share of time windows that find the same lag on their own) decides: below "
        "--min-confidence the command exits 1 with the reason and writes nothing, unless --force.",
    )
    sub.add_argument("--ir", required=True, type=path_argument, help="infrared video")
    sub.add_argument("--vi", required=True, type=path_argument, help="visible video")
    sub.add_argument(
        "--calib",
        type=path_argument,
        help="registration YAML to update (default: a new file with the frames stretched over each other)",
    )
    sub.add_argument("--max-offset", type=float, help="largest delay to consider, seconds (default: min(10, half the shorter video))")
    sub.add_argument("--max-seconds", type=float, help="analyse only the first this many seconds of each video")
    _add_confidence_gate(sub)
    sub.add_argument("--out", required=True, type=path_argument, help="registration YAML to write (may be the same as --calib)")
    sub.set_defaults(run=run_offset)


def _add_verify(commands) -> None:
    from calibration.verify import STYLES

    sub = _subparser(
        commands,
        "verify",
        "render an overlay PNG and print the alignment score",
        "Warp the source image (infrared, normally) with the registration onto the other image, write "
        "an overlay PNG (edges: visible edges green, infrared edges magenta, white where they agree; "
        "checker: alternating tiles; blend: false-colour infrared over visible) and print the alignment "
        "score (edge correlation over the shared area, higher is better) and the residual per-tile "
        "misalignment in pixels.",
    )
    sub.add_argument("--calib", required=True, type=path_argument, help="registration YAML")
    sub.add_argument("--ir", required=True, type=path_argument, help="infrared image")
    sub.add_argument("--vi", required=True, type=path_argument, help="visible image")
    sub.add_argument("--style", choices=STYLES, default="edges", help="overlay style (default: edges)")
    sub.add_argument("--min-score", type=float, help="exit with status 1 when the score is below this")
    _add_ir_16bit(sub)
    sub.add_argument("--out", required=True, type=path_argument, help="overlay PNG to write")
    sub.set_defaults(run=run_verify)


def _add_board(commands) -> None:
    sub = _subparser(
        commands,
        "board",
        "write a printable checkerboard or ChArUco board PNG",
        "Write a board image to print (or to show on a screen for the visible camera). For the "
        "infrared camera, print on a material whose squares differ in emissivity or heat it evenly.",
    )
    sub.add_argument("--pattern", required=True, help="COLSxROWS: inner corners (checkerboard) or squares (ChArUco)")
    sub.add_argument("--charuco", metavar="DICT", help="draw a ChArUco board with this ArUco dictionary")
    sub.add_argument("--pixels-per-square", type=int, default=100, help="resolution (default: 100)")
    sub.add_argument("--out", required=True, type=path_argument, help="PNG to write")
    sub.set_defaults(run=run_board)


@one_line_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    return int(args.run(args) or 0)


# --- subcommands ---------------------------------------------------------------------------


def run_target(args: argparse.Namespace) -> int:
    from calibration.target import calibrate_from_target

    _check_finite(args.square_size, "--square-size")  # a NaN would end up in the stereo T
    _check_finite(args.marker_size, "--marker-size")
    for flag, given in (("--marker-size", args.marker_size is not None), ("--legacy-charuco", args.legacy_charuco)):
        if given and args.charuco is None:  # a chessboard has no markers: it was ignored
            raise CalibrationError(f"{flag} describes a ChArUco board; it needs --charuco")
    if args.min_views < MIN_VIEWS_FLOOR:  # intrinsics from one view: a focal length of 10^6 px, written with exit 0
        raise CalibrationError(f"--min-views must be at least {MIN_VIEWS_FLOOR}: fewer views cannot pin a camera's intrinsics; got {args.min_views}")
    board = _board(args.pattern, args.charuco, args.square_size, args.marker_size, args.legacy_charuco)
    pairs = pair_folders(args.ir, args.vi)
    _check_registration_out(args.out, *[("--ir", pair.ir) for pair in pairs], *[("--vi", pair.vi) for pair in pairs])
    loaded = []
    for pair in tqdm(pairs, unit="pair", desc="read", disable=len(pairs) < 8):
        loaded.append((pair.name, read_infrared(pair.ir, args.ir_16bit), read_visible(pair.vi)))
    _check_same_sizes(loaded)
    result = calibrate_from_target(loaded, board, args.model, min_views_for_intrinsics=args.min_views)
    registration = Registration(
        H=result.H,
        source_size=image_size(loaded[0][1]),
        destination_size=image_size(loaded[0][2]),
        model=args.model,
        method=board.kind,
        error_px=result.rms_px,
        cameras=result.cameras,
    )
    save_registration(args.out, registration)
    missed = [view.name for view in result.views if view.ir is None or view.vi is None]
    found = f"board found in both images of {len(result.views_used)} of {len(result.views)} view(s)"
    print(found + (f"; missed: {', '.join(missed)}" if missed else ""))
    print(f"{result.inliers} of {result.correspondences} corners used; RMS reprojection error {result.rms_px:.3f} px")
    for note in result.notes:
        print(f"note: {note}")
    if result.cameras:
        _print_cameras(result.cameras)
    print(f"wrote {args.out}")
    return 0


def run_scene(args: argparse.Namespace) -> int:
    from calibration.scene import MIN_CONFIDENCE, SearchRange, register_frames

    for flag, value, limits in (("--max-scale", args.max_scale, MAX_SCALE_LIMITS), ("--max-rotation", args.max_rotation, MAX_ROTATION_LIMITS_DEG),
                                ("--max-shift", args.max_shift, MAX_SHIFT_LIMITS)):
        check_within(value, limits, flag)  # named by its flag here; SearchRange would name its field
    search = SearchRange(args.max_scale, args.max_rotation, args.max_shift)
    if args.max_width < SceneOptions.search_width:  # was raised to it without a word
        raise CalibrationError(f"--max-width must be at least {SceneOptions.search_width}, the width the global search works at; got {args.max_width}")
    options = SceneOptions(model=args.model, search=search, max_width=args.max_width)
    min_confidence = _min_confidence(args.min_confidence, MIN_CONFIDENCE)
    _check_registration_out(args.out, ("--ir", args.ir), ("--vi", args.vi), ("--init", args.init))
    start = None if args.init is None else load_registration(args.init)
    time_offset = 0.0 if start is None else start.time_offset_s  # videos' frames are paired by time on it
    pairs = _scene_pairs(args, time_offset)
    ir, vi = pairs[0]
    if start is not None:
        _check_init(start, ir, vi, args.init)
    init = None if start is None else start.H
    # Tens of seconds for a few video frames: a bar where someone watches (not for one pair, -q or a pipe).
    with tqdm(total=len(pairs), unit="frame pair", desc="register", disable=True if len(pairs) < 2 or args.quiet else None) as bar:
        result = register_frames(pairs, init, options, on_pair=bar.update)
    print(_correlation_line(result.correlation))
    print(_residual_line(result.residual))
    print(result.confidence.describe())
    if result.confidence.score < min_confidence and not args.force:
        return _refuse("scene", result.confidence.score, min_confidence, _confidence_reason(result.confidence),
                       "try more frames, a pair with more shared structure, --init, or --force")
    registration = Registration(
        H=result.H,
        source_size=image_size(ir),
        destination_size=image_size(vi),
        model=args.model,
        time_offset_s=time_offset,
        method=result.method,
        error_px=result.residual.rms_px,
    )
    save_registration(args.out, registration)
    _note_forced(result.confidence.score, min_confidence)
    print(f"wrote {args.out}")
    return 0


def _refuse(command: str, score: float, threshold: float, reason: str, advice: str) -> int:
    """A result below --min-confidence without --force: one line saying why, exit 1, nothing written."""
    print(f"{PROG} {command}: refused: confidence {score:.2f} is below {threshold:g} ({reason}); nothing written ({advice})", file=sys.stderr)
    return 1


def _note_forced(score: float, threshold: float) -> None:
    if score < threshold:
        log.warning("confidence %.2f is below %g: written anyway (--force)", score, threshold)


def _correlation_line(correlation: float) -> str:
    if not math.isfinite(correlation):  # NaN: no shared area to correlate over
        return "edge correlation: none (the warped images share too little area to measure it)"
    return f"edge correlation {correlation:.3f}"


def _confidence_reason(confidence) -> str:
    """The part of the confidence that sank it, in a few words."""
    from calibration.quality import HELD_OUT_PX
    from calibration.scene import STABILITY_PX, WANDER_PX

    if confidence.tiles_informative == 0:  # every other part is then infinite, and says nothing
        return "no informative tiles: the images share too little structure"
    wander = confidence.wander_px
    if wander is not None and not wander <= WANDER_PX:  # a veto: it decides alone
        return f"the answer moves {wander:.1f} px when refined on images resampled again"
    moved = confidence.stability_px
    if moved is not None and not moved <= STABILITY_PX:
        return f"the answer moves {moved:.1f} px when refined on resampled images"
    if not confidence.held_out_px <= HELD_OUT_PX:
        return f"fits to two halves of the tiles disagree by {confidence.held_out_px:.1f} px at the corners"
    return f"{confidence.tiles_agreeing} of {confidence.tiles_informative} informative tiles agree"


def _scene_pairs(args: argparse.Namespace, time_offset_s: float = 0.0) -> list:
    """The (infrared, visible) pairs to register: two images, or --frames pairs from two videos
    (DEFAULT_SCENE_FRAMES when both inputs are named as videos and --frames is not given), paired
    by time with ``time_offset_s`` (--init's) added to the infrared timestamps."""
    if same_file(args.ir, args.vi):  # an identity 'registration' at confidence 1.00, written
        raise CalibrationError(f"--ir and --vi are the same file, {args.ir}; give one of each camera")
    frames = args.frames
    for flag, path in (("--ir", args.ir), ("--vi", args.vi)):
        if frames is not None and Path(path).suffix.lower() in IMAGE_SUFFIXES:  # it was taken as a one-frame video
            raise CalibrationError(f"--frames samples frame pairs from two videos, and {flag} {path} is an image; leave it out")
    if frames is None:
        videos = looks_like_video(args.ir), looks_like_video(args.vi)
        if videos[0] != videos[1]:
            kinds = ["a video" if video else "an image" for video in videos]
            raise CalibrationError(f"--ir {args.ir} is {kinds[0]} and --vi {args.vi} {kinds[1]}: give two images, or two videos of the rig")
        if not videos[0]:
            return [(read_infrared(args.ir, args.ir_16bit), read_visible(args.vi))]
        frames = DEFAULT_SCENE_FRAMES
        log.info("the inputs are videos: registering %d frame pairs spread over their common time (--frames to change)", frames)
    from calibration.timing import sample_frame_pairs

    if frames < 1:
        raise CalibrationError(f"--frames must be at least 1; got {frames}")
    pairs = sample_frame_pairs(args.ir, args.vi, frames, time_offset_s)
    if len(pairs) < frames:  # the clips are shorter: the vote has fewer frames than asked for
        log.warning("--frames %d: the clips hold only %d frame pair(s); registering those", frames, len(pairs))
    return pairs


def run_points(args: argparse.Namespace) -> int:
    from calibration.points import check_inside, fit_points, read_point_pairs

    _check_registration_out(args.out, ("--file", args.file))
    ir_flag, vi_flag = _image_size_argument(args.ir_size, "--ir-size"), _image_size_argument(args.vi_size, "--vi-size")
    pairs = read_point_pairs(args.file)
    ir_size = _one_size(ir_flag, pairs.ir_size, "--ir-size", "ir_size", args.file)
    vi_size = _one_size(vi_flag, pairs.vi_size, "--vi-size", "vi_size", args.file)
    if ir_size is None or vi_size is None:
        raise CalibrationError("give the image sizes: --ir-size and --vi-size (or ir_size/vi_size in the YAML file)")
    check_inside(pairs, ir_size, vi_size)
    result = fit_points(pairs, args.model, robust=args.robust)
    if folds_the_frame(result.H, ir_size):
        raise CalibrationError(f"{args.file}: the point pairs give a map that {folds_reason('infrared')} "
                               "(are two pairs out of order, or the ir and vi columns swapped?)")
    registration = Registration(result.H, ir_size, vi_size, model=args.model, method="points", error_px=result.rms_px)
    save_registration(args.out, registration)
    used = int(result.inliers.sum())
    print(f"{used} of {len(result.inliers)} point pair(s) used")
    if result.rms_px is None:
        print(f"the {used} pairs determine the {args.model} exactly: add more pairs to measure the error")
    else:
        worst = int(np.argmax(np.where(result.inliers, result.errors_px, -1)))
        print(f"RMS error {result.rms_px:.3f} px; worst pair {worst + 1} at {result.errors_px[worst]:.3f} px")
    print(f"wrote {args.out}")
    return 0


def run_offset(args: argparse.Namespace) -> int:
    from calibration.timing import MIN_CONFIDENCE, estimate_offset, motion_energy, video_size

    if same_file(args.ir, args.vi):  # an offset of 0 at confidence 1.00, written
        raise CalibrationError(f"--ir and --vi are the same file, {args.ir}; give one recording of each camera")
    _check_positive_seconds(args.max_offset, "--max-offset")
    _check_positive_seconds(args.max_seconds, "--max-seconds")
    min_confidence = _min_confidence(args.min_confidence, MIN_CONFIDENCE)
    _check_registration_out(args.out, ("--ir", args.ir), ("--vi", args.vi))  # --out may be --calib: that updates it
    ir_size, vi_size = video_size(args.ir), video_size(args.vi)
    if args.calib is not None:
        registration = load_registration(args.calib)
        _check_video_sizes(registration, ir_size, vi_size, args.calib)  # before the long decode
    else:
        log.warning("no --calib: the spatial part of %s is the nominal size-ratio map; estimate it with target/scene/points", args.out)
        method = "identity" if ir_size == vi_size else "size-ratio"
        registration = Registration(size_ratio_homography(ir_size, vi_size), ir_size, vi_size, method=method)
    ir = motion_energy(args.ir, args.max_seconds, progress=None if args.quiet else "infrared")  # -q: no bars
    vi = motion_energy(args.vi, args.max_seconds, progress=None if args.quiet else "visible")
    result = estimate_offset(ir, vi, args.max_offset)
    print(
        f"time offset {result.offset_s:+.4f} s ({result.offset_vi_frames:+.2f} visible frames at {result.vi_fps:g} fps, "
        f"{result.offset_ir_frames:+.2f} infrared frames at {result.ir_fps:g} fps); correlation peak {result.peak:.2f}"
    )
    print(
        f"confidence {result.confidence:.2f} ({result.segments_agreeing} of {result.segments} time windows find the same lag; "
        f"peak-to-sidelobe ratio {result.peak_to_sidelobe:.1f})"
    )
    if result.confidence < min_confidence and not args.force:
        return _refuse("offset", result.confidence, min_confidence, _offset_reason(result),
                       "try longer recordings with more motion in view, another --max-offset, or --force")
    save_registration(args.out, registration.with_time_offset(result.offset_s))
    _note_forced(result.confidence, min_confidence)
    print("add it to infrared timestamps to put them on the visible clock")
    print(f"wrote {args.out}")
    return 0


def _offset_reason(result) -> str:
    if result.beyond_range:
        return "a match beyond --max-offset is backed by more time windows"
    return f"{result.segments_agreeing} of {result.segments} time windows find the same lag"


def run_verify(args: argparse.Namespace) -> int:
    from calibration.verify import check_sizes, verify

    _check_finite(args.min_score, "--min-score")
    _check_image_out(args.out, ("--calib", args.calib), ("--ir", args.ir), ("--vi", args.vi))
    registration = load_registration(args.calib)
    ir, vi = read_infrared(args.ir, args.ir_16bit), read_visible(args.vi)
    check_sizes(registration, ir, vi)
    source, destination = (ir, vi) if registration.source == "ir" else (vi, ir)
    result = verify(source, destination, registration.H, args.style, registration.model)
    _write_out_image(args.out, result.overlay)
    print(f"alignment score {result.score:.3f} (edge correlation over {result.coverage:.0%} of the {_other(registration.source)} image)")
    print(_residual_line(result.residual))
    print(result.confidence.describe())
    print(f"wrote {args.out}")
    if args.min_score is not None and not result.score >= args.min_score:
        print(f"{PROG} verify: score {result.score:.3f} is below --min-score {args.min_score}", file=sys.stderr)
        return 1
    return 0


def run_board(args: argparse.Namespace) -> int:
    from calibration.target import board_image, board_image_size

    board = _board(args.pattern, args.charuco, 1.0, None, False)
    if args.pixels_per_square < 8:
        raise CalibrationError(f"--pixels-per-square must be at least 8; got {args.pixels_per_square}")
    width, height = board_image_size(board, args.pixels_per_square)
    if max(width, height) > MAX_BOARD_SIDE:
        raise CalibrationError(
            f"the board image would be {width}x{height} px (--pattern {args.pattern}, --pixels-per-square "
            f"{args.pixels_per_square}); at most {MAX_BOARD_SIDE} px a side: give a smaller --pixels-per-square or --pattern"
        )
    _check_image_out(args.out)
    image, _ = board_image(board, args.pixels_per_square)
    _write_out_image(args.out, image)
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]}, {board.label})")
    return 0


# --- helpers ------------------------------------------------------------------------------


def _check_out(out: Path, *inputs: tuple[str, Path | None]) -> None:
    """--out must name a file that is none of the inputs (flag, path): checked before any work,
    so a slip costs neither the run nor an input."""
    if out.is_dir():
        raise CalibrationError(f"--out {out} is a folder; give a file name")
    for flag, path in inputs:
        if path is not None and file_key(out) == file_key(path):  # hard links and other spellings included
            raise CalibrationError(f"--out {out} is the same file as {flag} {path}; refusing to overwrite an input")


def _check_registration_out(out: Path, *inputs: tuple[str, Path | None]) -> None:
    """``_check_out``, and a file already at --out must be a calibration file: a slip of the name
    replaced a photo or a pipeline config with a registration, exit 0."""
    _check_out(out, *inputs)
    if out.is_file():
        try:
            load_registration(out)
        except CalibrationError as exc:
            raise CalibrationError(f"--out {out} exists and is not a calibration file ({exc}); choose another name, or delete it first") from None


def _check_image_out(out: Path, *inputs: tuple[str, Path | None]) -> None:
    """``_check_out``, and OpenCV must have a writer for --out's extension."""
    _check_out(out, *inputs)
    try:
        check_image_destination(out)
    except DataError as exc:
        raise DataError(f"--out: {exc}") from None


def _write_out_image(out: Path, image) -> None:
    """Write --out, making its folder as the calibration files' writer does (``save_registration``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_image(out, image)


def _check_finite(value: float | None, flag: str) -> None:
    if value is not None and not math.isfinite(value):
        raise CalibrationError(f"{flag} must be a finite number; got {value}")


def _check_positive_seconds(value: float | None, flag: str) -> None:
    # Checked before decoding: a NaN or inf would otherwise fail only after both videos were read.
    if value is not None and not 0 < value < math.inf:
        raise CalibrationError(f"{flag} must be a positive number of seconds; got {value:g}")


def _min_confidence(value: float | None, default: float) -> float:
    """--min-confidence, or ``default``. The score lies in [0, 1], so 0 refuses nothing; a NaN
    would fail every comparison and so refuse nothing either, silently."""
    if value is None:
        return default
    if not 0.0 <= value <= 1.0:
        raise CalibrationError(f"--min-confidence must lie within 0 to 1 (0 refuses nothing); got {value:g}")
    return value


def _limits(limits: tuple[float, float]) -> str:
    return f"allowed: {limits[0]:g} to {limits[1]:g}"


def _board(pattern: str, charuco: str | None, square_size: float, marker_size: float | None, legacy: bool):
    from calibration.target import BoardSpec

    columns, rows = _size_argument(pattern, "--pattern", "COLSxROWS like 9x6")
    kind = "charuco" if charuco else "checkerboard"
    options = {"dictionary": charuco} if charuco else {}
    return BoardSpec(kind, columns, rows, square_size, marker_size, legacy=legacy, **options)


def _one_size(given: tuple[int, int] | None, in_file: tuple[int, int] | None, flag: str, key: str, path) -> tuple[int, int] | None:
    """The flag's size or the point file's; two that differ are refused (the flag won in silence,
    and the points, clicked on images of the file's size, were read as another's)."""
    if given is not None and in_file is not None and tuple(given) != tuple(in_file):
        raise CalibrationError(f"{flag} {given[0]}x{given[1]} differs from {path}'s {key} {in_file[0]}x{in_file[1]}; give one of them")
    return given or in_file


def _size_argument(text: str | None, flag: str, form: str = SIZE_FORM) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        return parse_size(text, form)
    except ValueError as exc:
        raise CalibrationError(f"{flag}: {exc}") from None


def _image_size_argument(text: str | None, flag: str) -> tuple[int, int] | None:
    """An image size flag, held to the calibration file's limit: 100000x1080 failed only after
    the fit, naming the file's key (destination_size) rather than the flag."""
    size = _size_argument(text, flag)
    if size is not None and max(size) > MAX_SIDE:
        raise CalibrationError(f"{flag}: sizes are at most {MAX_SIDE} pixels a side; got {text}")
    return size


def _check_same_sizes(loaded: list) -> None:
    first_ir, first_vi = image_size(loaded[0][1]), image_size(loaded[0][2])
    for name, ir, vi in loaded[1:]:
        if image_size(ir) != first_ir or image_size(vi) != first_vi:
            raise CalibrationError(f"{name}: image sizes differ from the first pair's (all views must come from one rig setting)")


def _check_init(start: Registration, ir: np.ndarray, vi: np.ndarray, path: Path) -> None:
    if start.source != "ir":
        raise CalibrationError(f"{path}: --init must map infrared onto visible (source: ir)")
    if start.source_size != image_size(ir) or start.destination_size != image_size(vi):
        raise CalibrationError(
            f"{path}: made for {_sizes(start.source_size, start.destination_size)} images, "
            f"but these are {_sizes(image_size(ir), image_size(vi))}"
        )


def _check_video_sizes(registration: Registration, ir_size, vi_size, path: Path) -> None:
    expected = (registration.source_size, registration.destination_size)
    if registration.source == "vi":
        expected = expected[::-1]
    if (tuple(ir_size), tuple(vi_size)) != expected:
        raise CalibrationError(
            f"{path}: made for {_sizes(*expected)} frames, but the videos are {_sizes(ir_size, vi_size)}"
        )


def _sizes(ir_size, vi_size) -> str:
    return f"infrared {ir_size[0]}x{ir_size[1]} / visible {vi_size[0]}x{vi_size[1]}"


def _other(source: str) -> str:
    return "visible" if source == "ir" else "infrared"


def _residual_line(residual) -> str:
    if residual.rms_px is None or not math.isfinite(residual.rms_px):
        return f"residual: no confident tile among {residual.tiles_total} (too little shared structure to measure)"
    bias = np.median(residual.shifts[:, 2:], axis=0)
    return (
        f"residual misalignment {residual.rms_px:.2f} px RMS over {residual.tiles_used} of {residual.tiles_total} tiles "
        f"(median shift {bias[0]:+.2f}, {bias[1]:+.2f} px)"
    )


def _print_cameras(cameras: dict) -> None:
    for name, label in (("ir", "infrared"), ("vi", "visible")):
        camera = cameras[name]
        K = np.array(camera["K"])
        print(
            f"{label} intrinsics from {camera['views']} views: fx {K[0, 0]:.1f} fy {K[1, 1]:.1f} "
            f"cx {K[0, 2]:.1f} cy {K[1, 2]:.1f}, RMS {camera['rms_px']:.3f} px"
        )
    stereo = cameras["stereo"]
    T = np.array(stereo["T"])
    angle = math.degrees(np.linalg.norm(cv2.Rodrigues(np.array(stereo["R"]))[0]))
    unit = f"units of --square-size {cameras['square_size']:g}" if cameras["square_size"] != 1 else "board squares"
    print(f"stereo: rotation {angle:.2f} deg, baseline {np.linalg.norm(T):.3g} ({unit}), RMS {stereo['rms_px']:.3f} px")


if __name__ == "__main__":
    sys.exit(main())
