"""``ldfusion bench``: parse the arguments, run ``pipeline.bench``, print the table, write JSON."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

from ldfusion.cli.common import add_cpu_runtime_arguments, add_logging_arguments, one_line_errors, path_argument, setup_logging
from ldfusion.config import saved_mapping
from ldfusion.errors import DataError
from ldfusion.inference import COMPILE_KINDS, COMPILE_MODES, resolve_device
from ldfusion.paths import check_output_folder, refuse_overwriting_inputs
from ldfusion.variants import VARIANTS
from ldfusion.weights import choose_weights, is_auto, resolve_model, resolve_weights_path
from pipeline.bench import (
    DEFAULT_RESOLUTIONS, PATHS, BenchSettings, Measurement, default_devices, format_table, machine_info, measure_all, runtime_summary, same_run_ratios,
    parse_resolution, synthetic_frames,
)

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldfusion bench",
        description="Measure fused frames per second, p50/p99 latency and peak memory for the authors' "
        "per-frame reference path, the model alone (Fuser), the whole streaming pipeline, the pipeline with an "
        "identity network (passthrough) and decoding alone (decode), on the same "
        "synthetic frames in one run, on the CPU and on CUDA when present. Prints a table with the "
        "speed-ups over the reference, then the pipeline's own cost as ratios of paths measured in the same "
        "run (passthrough/decode, pipeline/model), and writes the numbers as JSON.",
    )
    parser.add_argument("--weights", default=None, help="weights file or registry name (default: auto, as `run` and `fuse` choose)")
    parser.add_argument("--model", choices=sorted(VARIANTS), help="network variant (default: read from the weights)")
    parser.add_argument(
        "--resolutions", nargs="+", default=list(DEFAULT_RESOLUTIONS), metavar="WxH", help="frame sizes (default: 640x480 1280x720)"
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4], metavar="N", help="batch sizes (default: 1 4)")
    parser.add_argument("--devices", nargs="+", help="devices to measure (default: cpu, and cuda when present)")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), help="what to measure (default: all)")
    parser.add_argument("--frames", type=int, default=16, help="timed frames per measurement (default: 16)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before each measurement (default: 2)")
    parser.add_argument("--streams", type=int, default=1, help="stream pairs in one pipeline for pipeline, passthrough, decode (default: 1)")
    parser.add_argument(
        "--compile", choices=COMPILE_MODES, default="off",
        help="torch.compile the network for model, model_on_device and pipeline: auto (on for CUDA) | on | off (default: off). "
        "The warm-up calls compile (the time is logged); use --warmup 2 or more so the timed calls run compiled",
    )
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default: inductor)")
    parser.add_argument("--compile-mode", choices=COMPILE_KINDS, default="auto",
                        help="default: inductor's kernels; reduce-overhead: also replayed as CUDA graphs, one launch per call; "
                        "auto: reduce-overhead on CUDA, default elsewhere (default: auto)")
    parser.add_argument("--fp32", action="store_true", help="keep the model and pipeline in float32 on CUDA (default: half)")
    parser.add_argument("--out", type=path_argument, default=Path("bench.json"), help="JSON output (default: bench.json)")
    parser.add_argument("--backend", choices=("auto", "torch", "openvino"), default="auto",
                        help="CPU runtime for the model and pipeline paths: auto = OpenVINO when installed (default: auto)")
    add_cpu_runtime_arguments(parser)
    add_logging_arguments(parser)
    return parser


@one_line_errors("ldfusion bench")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    check_json_destination(args.out)
    resolutions = [parse_resolution(text) for text in args.resolutions]  # every argument checked before weights are chosen
    devices = [resolve_device(name) for name in (args.devices or default_devices())]
    weights = choose_weights(args.weights, devices[0])
    path = resolve_weights_path(weights)
    refuse_overwriting_inputs([args.out], [path], "--out")
    if args.out.is_file() and not _bench_results(args.out):  # a config or notes given by a slip were replaced, exit 0
        raise DataError(f"--out {args.out} exists and holds no earlier bench results; choose another name, or delete it first")
    settings = BenchSettings(
        tuple(args.paths), tuple(args.batch_sizes), args.frames, args.warmup, args.fp32, args.streams,
        compile=args.compile, compile_backend=args.compile_backend, compile_mode=args.compile_mode,
        backend=args.backend, int8=args.int8, precision=args.precision or "auto",
        weights_path=path if path.is_file() else None, auto_weights=is_auto(args.weights),
    )
    model = resolve_model(weights, args.model)

    results: list[Measurement] = []
    for device in devices:
        for width, height in resolutions:
            results += measure_all(model, device, synthetic_frames(width, height), settings)
    report = {
        "machine": machine_info(devices),
        "settings": {**asdict(settings), "model": model.spec.name, "weights": str(weights)},
        "results": [asdict(r) for r in results],
        "ratios": same_run_ratios(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")  # default=str: the weights path
    print(format_table(results))
    print("\n".join(runtime_summary(results)))
    print(f"\n{report['machine']['summary']}; JSON written to {args.out}")
    return 0


def check_json_destination(out: Path) -> None:
    """--out is a file name, and the folders above it are folders (or are made): found now,
    not after minutes of measuring."""
    if out.is_dir():
        raise DataError(f"--out {out} is a folder; bench writes its results to a JSON file")
    for folder in out.parents:
        check_output_folder(folder, f"--out {out}: the folder")


def _bench_results(path: Path) -> bool:
    """Whether ``path`` holds what bench writes (a JSON object with its results): those it replaces."""
    data = saved_mapping(path)
    return data is not None and "results" in data and "machine" in data
