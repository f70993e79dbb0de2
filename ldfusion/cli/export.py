"""``ldfusion export``: write a fusion network as ONNX or OpenVINO IR for CPU runtimes."""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

import torch

from ldfusion.cli.common import add_logging_arguments, one_line_errors, path_argument, setup_logging
from ldfusion.errors import CheckpointError, ConfigError
from ldfusion.variants import VARIANTS

log = logging.getLogger("ldfusion.export")

# The parity check runs at sizes a user meets: odd, and one that is not a multiple of 8.
PARITY_SIZES = ((117, 161), (480, 640))



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldfusion export",
        description="Export fusion weights for CPU runtimes, with exact rewrites for speed and precision "
        "(conv biases before instance norms zeroed, LayerNorm in OpenVINO's fused form, the output conv as "
        "depthwise + sum). The file is cached beside the weights (or in $LDFUSION_CACHE for bundled and "
        "read-only weights) under a name keyed by the weights' sha256, and rebuilt when they change; "
        "`--backend openvino` and `auto` use it. Ends by printing how closely the export agrees with PyTorch.",
    )
    parser.add_argument("--weights", default="default", help="weights file or registry name (default: the bundled 'default'; also fast, ld-lite)")
    parser.add_argument("--model", choices=sorted(VARIANTS), help="network variant (default: read from the weights)")
    parser.add_argument("--format", choices=("onnx", "openvino"), default="openvino", help="onnx or openvino (default: openvino)")
    parser.add_argument("--int8", action="store_true",
                        help="OpenVINO only: post-training int8 (NNCF), calibrated on --calib-ir/--calib-vi; "
                        "the first and last convs and the norms' inputs stay float32. The bundled default's ships with ldfusion")
    parser.add_argument("--calib-ir", type=path_argument, help="folder of infrared calibration images (with --int8)")
    parser.add_argument("--calib-vi", type=path_argument, help="folder of the paired visible images (with --int8)")
    parser.add_argument("--calib-count", type=int, default=32, help="calibration pairs (default: 32)")
    parser.add_argument("--force", action="store_true", help="export again even when the cached file is current")
    add_logging_arguments(parser)
    return parser


@one_line_errors("ldfusion export")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    from ldfusion.backends import OpenVinoNetwork, float_precision, openvino_available
    from ldfusion.export import MIN_FLOAT_PARITY_DB, agreement_db, calibration_pairs, ensure_exported, exported_path, parity_inputs
    from ldfusion.weights import BUNDLED_DIR, CPU_AUTO_INT8, CPU_AUTO_WEIGHTS, is_auto, resolve_model, resolve_weights_path

    if args.int8 and args.format != "openvino":
        raise ConfigError("--int8 needs --format openvino")
    if not args.int8 and (args.calib_ir is not None or args.calib_vi is not None):  # the user meant an int8 export
        raise ConfigError("--calib-ir and --calib-vi calibrate an int8 export: add --int8, or leave them out for float32")
    if is_auto(args.weights):  # resolved per device when fusing; as a file name it read "'auto' is not one of: auto, ..."
        raise ConfigError("--weights auto chooses weights per device when fusing; export the ones it chooses on the CPU: "
                          f"{CPU_AUTO_WEIGHTS}{' --int8' if CPU_AUTO_INT8 else ''}")
    if args.calib_count < 1:
        raise ConfigError(f"--calib-count must be at least 1; got {args.calib_count}")
    if not openvino_available():
        raise ConfigError("openvino is not installed (pip install openvino); it converts and checks the export")
    weights = resolve_weights_path(args.weights)
    if not weights.is_file():
        raise ConfigError(f"{weights}: export needs a single weights file (not an Enc_/Dec_ folder)")
    model = resolve_model(args.weights, args.model).eval()
    target = exported_path(weights, args.format, args.int8, BUNDLED_DIR)
    no_calibration = args.calib_ir is None or args.calib_vi is None
    building = args.force or not target.is_file()
    if args.int8 and no_calibration and building:
        raise ConfigError("--int8 needs calibration images: --calib-ir DIR --calib-vi DIR (e.g. training pairs)")
    if args.force and target.parent.resolve() == BUNDLED_DIR.resolve():
        raise ConfigError(f"{target.name} ships with ldfusion and is not rebuilt here; "
                          "to quantize with your own calibration images, export a copy of the weights file")
    if building:
        _check_extra(args)  # before --force deletes the cached file it could not make again
        _check_output_finite(model, weights)
    if args.force:
        target.unlink(missing_ok=True)
    calibration = (lambda: calibration_pairs(args.calib_ir, args.calib_vi, args.calib_count)) if args.int8 else None
    path, built = ensure_exported(model, weights, args.format, args.int8, calibration, bundled_dir=BUNDLED_DIR)
    # f32 checks the export itself; where auto computes in bf16 (int8), also what the pipeline will run.
    # Read and compiled (by the parity runs) before anything is said: a damaged cached file is named
    # as such, not called up to date; a .bin damaged at its own size reads.
    networks = {precision: OpenVinoNetwork(path, model.spec, precision=precision) for precision in dict.fromkeys(("f32", float_precision("auto", args.int8)))}
    parity = []
    for precision, network in networks.items():
        generator = torch.Generator().manual_seed(0)
        for height, width in PARITY_SIZES:
            vi_y, ir = parity_inputs(height, width, generator)
            with torch.inference_mode():
                reference = model(vi_y, ir)
            exported = network(vi_y, ir)
            diff, db = float((reference - exported).abs().max()), agreement_db(reference, exported)
            if precision == "f32" and not args.int8 and not db >= MIN_FLOAT_PARITY_DB["f32"]:
                raise _disagreement(path, built, weights, f"{db:.1f} dB PSNR at {height}x{width}; a float export agrees "
                                    f"to over {MIN_FLOAT_PARITY_DB['f32']:g} dB")
            parity.append(f"parity {height}x{width}, {precision}: {db:.1f} dB PSNR against PyTorch, max |diff| {diff:.2e}")
    print(f"{'wrote' if built else 'up to date'}: {path}")
    print("\n".join(parity))
    return 0


def _disagreement(path: Path, built: bool, weights: Path, how: str) -> CheckpointError:
    """An export that disagrees with PyTorch. Cached, it is damaged. Made just now, the weights
    are at fault (values so large that float32 arithmetic loses them): the files are removed, as
    other commands would otherwise use them, and "delete it" would only lead to the same export."""
    if not built:
        return CheckpointError(f"{path}: the export disagrees with PyTorch ({how}): it may be damaged; delete it "
                               "(and its .bin) and it is exported again from the weights")
    path.unlink(missing_ok=True)
    path.with_suffix(".bin").unlink(missing_ok=True)
    return CheckpointError(f"{weights}: exported, the network disagrees with PyTorch ({how}): the weights lose too much in "
                           "float32 (values too large?); nothing kept")


def _check_output_finite(model: torch.nn.Module, weights: Path) -> None:
    """Weights that overflow (finite, but NaN out) were exported with exit 0 and a parity of
    "nan dB"; `fuse` refuses them. Checked before anything is written."""
    from ldfusion.export import parity_inputs

    vi_y, ir = parity_inputs(*PARITY_SIZES[0], torch.Generator().manual_seed(0))
    with torch.inference_mode():
        if not bool(torch.isfinite(model(vi_y, ir)).all()):
            raise CheckpointError(f"{weights}: the network output is not finite (NaN/inf) with these weights; they are broken")


def _check_extra(args: argparse.Namespace) -> None:
    """Making an ONNX or int8 export needs the export extra, which a plain install leaves out: say so
    before the work (a cached or shipped export needs neither)."""
    needed = [name for name, wanted in (("onnx", args.format == "onnx"), ("nncf", args.int8)) if wanted and importlib.util.find_spec(name) is None]
    if needed:
        what = "--format onnx" if "onnx" in needed else "--int8"
        raise ConfigError(f"{what} needs {' and '.join(needed)}, which a plain install leaves out: pip install \"ldfusion[export]\" (or -e \".[export]\")")
