"""``ldfusion fuse``: fuse infrared/visible image pairs from two folders into PNGs."""

from __future__ import annotations

import argparse
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

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
from ldfusion.errors import DataError
from ldfusion.imageio import IMAGE_SUFFIXES, IR_16BIT_MODES, ImagePair, pair_folders, read_pair, side_by_side, write_image
from ldfusion.inference import Fuser, FuserOptions, PendingArrays, default_batch_size
from ldfusion.paths import check_output_folder, refuse_an_input_folder, refuse_overwriting_inputs
from ldfusion.variants import VARIANTS

log = logging.getLogger("ldfusion.fuse")

T = TypeVar("T")
R = TypeVar("R")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldfusion fuse",
        description="Fuse infrared/visible image pairs. Files in --ir and --vi are paired by name "
        "(ir/7.png with vi/7.jpg); the fused images are written to --out as PNG with the visible "
        "image's colour. --ir and --vi may also be two single files.",
    )
    parser.add_argument("--ir", required=True, type=path_argument, help="folder (or file) of infrared images, 8- or 16-bit")
    parser.add_argument("--vi", required=True, type=path_argument, help="folder (or file) of visible images, colour or gray")
    parser.add_argument("--out", required=True, type=path_argument, help="output folder (created if missing)")
    parser.add_argument("--model", choices=sorted(VARIANTS), help="network variant (default: read from the weights)")
    parser.add_argument(
        "--weights",
        default=None,
        help="weights: a file, an Enc_*/Dec_* folder, or a registry name "
        "(default: auto, bundled weights chosen for the device, named in the log; "
        "also 'default', 'fast', 'ld-lite', 'ldfusion')",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N (default: auto)")
    parser.add_argument(
        "--batch", type=int, default=None, help="pairs of the same size fused together (default: 8 on CUDA, 1 on the CPU)"
    )
    parser.add_argument("--half", action="store_true", help="half precision (CUDA only)")
    parser.add_argument("--backend", choices=("auto", "torch", "openvino"), default="auto",
                        help="CPU runtime: auto = OpenVINO when installed, else PyTorch (default: auto)")
    add_cpu_runtime_arguments(parser)
    parser.add_argument(
        "--ir-16bit",
        choices=IR_16BIT_MODES,
        default="stretch",
        help="16-bit infrared: stretch between the 0.5/99.5 percentiles, or scale by 1/65535 (default: stretch)",
    )
    parser.add_argument("--side-by-side", action="store_true", help="also write IR | visible | fused as NAME_sbs.png")
    parser.add_argument("--overwrite", action="store_true", help="replace fused images already in --out (else the command refuses to start)")
    add_logging_arguments(parser)
    return parser


@one_line_errors("ldfusion fuse")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.batch is not None and args.batch < 1:
        raise DataError(f"--batch must be at least 1; got {args.batch}")
    check_inputs_exist({"--ir": args.ir, "--vi": args.vi})
    pairs = pair_folders(args.ir, args.vi)
    check_outputs(pairs, args.out, args.side_by_side, args.overwrite)
    # A folder is a batch job: two OpenVINO calls in flight, as a file-mode pipeline run keeps.
    options = FuserOptions(device=args.device, half=args.half or None, backend=args.backend, int8=args.int8,
                           precision=args.precision or "auto", cpu_streams=2)
    fuser = Fuser.from_weights(args.weights, args.model, options)
    args.out.mkdir(parents=True, exist_ok=True)
    log.info("fusing %d pair(s) with %s on %s", len(pairs), fuser.spec.name, fuser.device)
    batch = args.batch or default_batch_size(fuser.device)
    written = fuse_pairs(fuser, pairs, args.out, batch, args.ir_16bit, args.side_by_side, progress=not args.quiet)
    log.info("wrote %d fused image(s) to %s", written, args.out)
    return 0


def output_names(pair: ImagePair, with_sbs: bool) -> list[str]:
    return [f"{pair.name}.png"] + ([f"{pair.name}_sbs.png"] if with_sbs else [])


def check_outputs(pairs: list[ImagePair], out_dir: Path, with_sbs: bool, overwrite: bool, option: str = "--out") -> None:
    """Before anything is written: ``option`` (--out, eval's --save-fused) is a folder, no
    output is an input, and existing outputs need --overwrite."""
    given = f"{option} {out_dir}"
    check_output_folder(out_dir, option)
    if out_dir.suffix.lower() in IMAGE_SUFFIXES and not out_dir.is_dir():  # it was made a folder of that name
        raise DataError(f"{given} names an image file; {option} is a folder, where each fused image is written as <name>.png")
    writers: dict[str, str] = {}  # output name -> the pair that writes it
    for pair in pairs:
        for name in output_names(pair, with_sbs):
            if writers.setdefault(name, pair.name) != pair.name:  # pairs a and a_sbs with --side-by-side
                raise DataError(f"pairs {writers[name]!r} and {pair.name!r} would both write {name}; rename one of them or leave out --side-by-side")
    outputs = [out_dir / name for name in writers]
    inputs = [path for pair in pairs for path in (pair.ir, pair.vi)]
    refuse_an_input_folder(out_dir, inputs, given)
    refuse_overwriting_inputs(outputs, inputs, given)
    folders = [path for path in outputs if path.is_dir()]  # found only when its turn came, the images before it written
    if folders:
        raise DataError(f"{given}: {folders[0]} is a folder where a fused image goes; move it, or choose another {option}")
    existing = [path for path in outputs if path.exists()]
    if existing and not overwrite:
        raise DataError(f"{given} already holds {len(existing)} of the fused images (first: {existing[0].name}); pass --overwrite to replace them")


def fuse_pairs(
    fuser: Fuser,
    pairs: list[ImagePair],
    out_dir: Path,
    batch: int,
    ir_16bit: str = "stretch",
    with_sbs: bool = False,
    progress: bool = True,
) -> int:
    """Read, fuse in same-size batches, and write; reading and writing overlap the network, and
    a batch's network call starts before the previous batch's result is taken (on OpenVINO
    with two streams both run at once; elsewhere the call is done when it starts)."""

    def load(pair: ImagePair) -> tuple[ImagePair, np.ndarray, np.ndarray]:
        return (pair, *read_pair(pair, ir_16bit))

    def save(pair: ImagePair, visible: np.ndarray, ir: np.ndarray, fused: np.ndarray) -> None:
        fused_name, *sbs_name = output_names(pair, with_sbs)
        write_image(out_dir / fused_name, fused)
        if sbs_name:
            write_image(out_dir / sbs_name[0], side_by_side(ir, visible, fused))

    written = 0
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="fuse-io") as pool, tqdm(
        total=len(pairs), unit="pair", desc="fuse", disable=True if not progress else None  # None: only on a terminal
    ) as bar:
        pending_writes: deque[Future] = deque()

        def hand_on(group: list[tuple], fused: list[np.ndarray]) -> None:
            nonlocal written
            for (pair, visible, ir), image in zip(group, fused):
                pending_writes.append(pool.submit(save, pair, visible, ir, image))
            while len(pending_writes) > 2 * batch:
                pending_writes.popleft().result()
                written += 1
            bar.update(len(group))

        in_flight: tuple[list[tuple], PendingArrays] | None = None
        for group in same_size_batches(prefetch(pool, load, pairs, depth=2 * batch), batch):
            started = group, fuser.start_fuse_arrays([g[1] for g in group], [g[2] for g in group])
            if in_flight is not None:
                hand_on(in_flight[0], in_flight[1].result())
            in_flight = started
        if in_flight is not None:
            hand_on(in_flight[0], in_flight[1].result())
        for future in pending_writes:
            future.result()
            written += 1
    return written


def prefetch(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], depth: int) -> Iterator[R]:
    """``map(fn, items)`` on ``pool`` with at most ``depth`` results in flight, in order."""
    in_flight: deque[Future] = deque()
    for item in items:
        in_flight.append(pool.submit(fn, item))
        if len(in_flight) >= depth:
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()


def same_size_batches(loaded: Iterable[tuple], batch: int) -> Iterator[list[tuple]]:
    """Group consecutive (pair, visible, ir) items of equal shape into lists of at most ``batch``."""
    group: list[tuple] = []
    for item in loaded:
        if group and (len(group) == batch or item[1].shape != group[0][1].shape):
            yield group
            group = []
        group.append(item)
    if group:
        yield group
