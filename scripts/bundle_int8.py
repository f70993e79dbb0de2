#!/usr/bin/env python3
"""Build the int8 OpenVINO export of the bundled weights that ships in ldfusion/bundled.

    PYTHONPATH=. python scripts/bundle_int8.py [--weights default] [--calib-ir DIR --calib-vi DIR]

`weights: auto` on the CPU runs it (``ldfusion.weights.CPU_AUTO_INT8``), so a user never
needs calibration images: they are ours, the MSRS training pairs of
configs/distill_default.yaml by default, whole frames. The file's name carries the weights'
sha256 and the export version, so a rebuilt ``default.pt`` or a new int8 recipe leaves it
unused (and a test fails) until this script is run again; older files are removed.

Ends by running scripts/teacher_agreement.py on what `auto` now runs, and exits with its
status: 1 when the int8 network misses the quality bar against LD-Lite (then do not ship it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from ldfusion.export import calibration_pairs, ensure_exported  # noqa: E402
from ldfusion.weights import resolve_model, resolve_weights_path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="default", help="bundled weights to quantize (default: default)")
    parser.add_argument("--calib-ir", type=Path, default=SHARED / "pairs/msrs/ir")
    parser.add_argument("--calib-vi", type=Path, default=SHARED / "pairs/msrs/vi")
    parser.add_argument("--calib-count", type=int, default=32)
    args = parser.parse_args(argv)
    weights = resolve_weights_path(args.weights)
    model = resolve_model(args.weights).eval()
    # bundled_dir=None: write beside the weights, into the package, instead of the user cache.
    path, built = ensure_exported(model, weights, "openvino", int8=True,
                                  calibration=lambda: calibration_pairs(args.calib_ir, args.calib_vi, args.calib_count))
    print(f"{'wrote' if built else 'up to date'}: {path} ({path.with_suffix('.bin').stat().st_size / 1e6:.2f} MB of weights)")
    import teacher_agreement

    return teacher_agreement.main(["--student", "auto", "--backend", "auto"])


if __name__ == "__main__":
    sys.exit(main())
