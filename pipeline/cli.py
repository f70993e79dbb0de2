"""``ldfusion run CONFIG``: the streaming pipeline from a YAML config."""

from __future__ import annotations

import argparse
import logging
import sys

import yaml
from tqdm.contrib.logging import logging_redirect_tqdm

from ldfusion.cli.common import (
    EXIT_INTERRUPTED, EXIT_TERMINATED, add_cpu_runtime_arguments, add_logging_arguments, one_line_errors, path_argument, setup_logging,
)
from ldfusion.config import to_dict
from ldfusion.errors import ConfigError
from ldfusion.redact import mask_credentials
from pipeline.config import load_pipeline_config
from pipeline.runner import Pipeline

log = logging.getLogger("pipeline.cli")

EXIT_CODES = {"SIGINT": EXIT_INTERRUPTED, "SIGTERM": EXIT_TERMINATED}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldfusion run",
        description="Fuse paired infrared/visible streams (video files, image folders or live cameras)\n"
        "as described by a YAML config, and write the result to MP4, PNG and/or a ZeroMQ publisher.\n"
        "Ctrl-C (or SIGTERM) stops reading and finishes the frames already read, so the outputs\n"
        "stay valid; press it again to stop at once.",
        epilog="examples:\n"
        "  ldfusion run configs/video_to_mp4.yaml\n"
        "  ldfusion run configs/demo_m3svd.yaml --device cpu --set run.max_frames=60\n"
        "  ldfusion run configs/live_to_zmq.yaml --set streams.0.sync.slop_s=0.02",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", type=path_argument, help="pipeline YAML (see configs/); input paths are relative to the current folder")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. model.batch_size=8 or streams.0.ir.path=ir.mp4 (repeatable)",
    )
    parser.add_argument("--weights", help="model weights: a file, or a registry name (auto, fast, default, ld-lite, ldfusion); overrides model.weights")
    parser.add_argument("--variant", help="network variant, when the weights do not say")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides model.device)")
    parser.add_argument("--out", type=path_argument, help="output folder (overrides run.out_dir); sink paths are relative to it")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist (config: run.overwrite); else the run refuses to start")
    parser.add_argument("--max-frames", type=int, help="stop each stream after this many paired frames (file mode fuses and "
                        "writes them all; live mode may drop some to stay current)")
    add_cpu_runtime_arguments(parser)  # override model.int8 and model.precision
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (-q implies it)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_logging_arguments(parser)
    return parser


def flag_settings(args: argparse.Namespace) -> dict:
    """The flags that set config values, nested as in the config: they win over the file and
    ``--set``, and the config is checked once with them (an error names what the run uses)."""
    model = {key: value for key, value in vars(args).items() if key in ("weights", "variant", "device", "int8", "precision") and value is not None}
    run = {}
    if args.out is not None:
        run["out_dir"] = str(args.out)
    if args.max_frames is not None:
        run["max_frames"] = args.max_frames
    if args.no_progress or args.quiet:  # -q: only warnings and errors, as in fuse, eval and demo
        run["progress"] = False
    if args.overwrite:
        run["overwrite"] = True
    return {key: value for key, value in (("model", model), ("run", run)) if value}


@one_line_errors("ldfusion run")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    config = load_pipeline_config(args.config, args.overrides, flag_settings(args))
    if args.print_config:
        print(yaml.safe_dump(mask_credentials(to_dict(config)), sort_keys=False), end="")
        return 0
    if not config.sinks:  # every frame fused and dropped, exit 0, and the table said "written"
        raise ConfigError("the config has no sinks: the fused frames would go nowhere; add one under sinks: "
                          "(kind mp4, png or zmq). To measure speed alone, use `ldfusion bench`")
    with logging_redirect_tqdm():
        summary = Pipeline(config, config_file=args.config).run()  # a Ctrl-C's summary, not raised: printed below
    print(summary.report)
    for output in summary.outputs:
        print(f"output: {output}")
    if summary.stopped_by in EXIT_CODES:
        print(f"stopped by {summary.stopped_by}; the outputs hold the {summary.frames_out} frame(s) fused so far", file=sys.stderr)
        return EXIT_CODES[summary.stopped_by]
    return 0
