"""Run the M3SVD demo and check every output against its inputs (the issue's "done when").

For each pair: the fused MP4 has exactly as many frames as the shorter input, the input's
frame rate, and strictly increasing pts. Prints one line per pair; exits 1 on a mismatch.

    python scripts/pipeline_m3svd_check.py [--weights W] [--device cpu] [--only 1230_1202] [--config configs/demo_m3svd.yaml]
    python scripts/pipeline_m3svd_check.py --identity     # counts, rates and pts without the network's cost
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from ldfusion.inference import Fuser, FuserOptions
from ldfusion.video import probe_frames
from pipeline.bench import IdentityFusion
from pipeline.config import load_pipeline_config
from pipeline.runner import run_pipeline


def count_frames(path: str) -> tuple[int, object]:
    count, rate, _ = probe_frames(path)
    return count, rate


def check_output(path: Path) -> tuple[int, object, bool]:
    count, rate, times = probe_frames(path)
    return count, rate, all(b > a for a, b in zip(times, times[1:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo_m3svd.yaml")
    parser.add_argument("--weights", help="weights file or registry name (default: the config's)")
    parser.add_argument("--device", help="overrides model.device")
    parser.add_argument("--out", default="runs/m3svd_check", help="output folder")
    parser.add_argument("--only", nargs="+", help="check only these stream ids (e.g. 1230_1202)")
    parser.add_argument("--identity", action="store_true", help="fuse with an identity network: the counts do not depend on the model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    config = load_pipeline_config(args.config)
    model = config.model
    if args.weights:
        model = replace(model, weights=args.weights)
    if args.device:
        model = replace(model, device=args.device)
    streams = tuple(s for s in config.streams if not args.only or s.id in args.only)
    config = replace(config, streams=streams, model=model, run=replace(config.run, out_dir=args.out, progress=False))

    started = time.monotonic()
    fuser = Fuser(IdentityFusion(), FuserOptions(device=model.device)) if args.identity else None
    summary = run_pipeline(config, fuser)
    print(f"{summary.frames_out} frames in {time.monotonic() - started:.1f} s ({summary.fps:.2f} fps, {summary.model} on {summary.device})")
    ok = True
    for stream in config.streams:
        n_ir, rate_ir = count_frames(str(stream.ir.path))
        n_vi, rate_vi = count_frames(str(stream.visible.path))
        fused = config.sink_path(config.sinks[0], stream.id)
        n_out, rate_out, monotonic = check_output(fused)
        good = n_out == min(n_ir, n_vi) and rate_out == rate_vi and monotonic
        ok &= good
        print(f"{stream.id}: ir {n_ir} @ {rate_ir}, visible {n_vi} @ {rate_vi} -> {fused.name} {n_out} @ {rate_out}, "
              f"timestamps {'increasing' if monotonic else 'NOT increasing'}: {'ok' if good else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
