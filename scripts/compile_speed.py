#!/usr/bin/env python
"""Fusion network eager against torch.compile'd: fused frames per second and compile time.

    python scripts/compile_speed.py --device cuda --resolution 640x512 --batch-sizes 8 32 [--out compile.json]

Measures ``Fuser.fuse_y`` (the ``model_on_device`` path: inputs already on the device) with
``compile: off`` and ``compile: on`` on the same random frames, in the Fuser's production
settings (fp16 and channels_last on CUDA), and the largest difference between the two
outputs. The first compiled call's time is the compile time (inductor caches kernels on
disk, so a second run of the script compiles faster). Issue 11's target:
``model_on_device`` compiled >= 2500 fps at 640x512, batch 32, on an H100 or H200.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import torch

from ldfusion.inference import Fuser, FuserOptions
from ldfusion.weights import resolve_model


def measure(fuser: Fuser, vi: torch.Tensor, ir: torch.Tensor, iterations: int) -> tuple[float, float, torch.Tensor]:
    """(first call seconds, frames per second after warm-up, last output)."""
    start = time.perf_counter()
    out = _synchronized(fuser, vi, ir)
    first_s = time.perf_counter() - start
    for _ in range(3):
        _synchronized(fuser, vi, ir)
    start = time.perf_counter()
    for _ in range(iterations):
        out = fuser.fuse_y(vi, ir)
    _synchronize(fuser.device)
    return first_s, iterations * vi.shape[0] / (time.perf_counter() - start), out


def _synchronized(fuser: Fuser, vi: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    out = fuser.fuse_y(vi, ir)
    _synchronize(fuser.device)
    return out


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda or cpu (default cuda)")
    parser.add_argument("--resolution", default="640x512", help="WIDTHxHEIGHT (default 640x512)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32], help="default: 8 32")
    parser.add_argument("--iterations", type=int, default=50, help="timed calls per measurement (default 50)")
    parser.add_argument("--weights", default=None, help="weights file or registry name (default: the bundled default)")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    parser.add_argument("--out", type=Path, default=None, help="write the records as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    width, height = (int(v) for v in args.resolution.lower().split("x"))
    model = resolve_model(args.weights, None)
    records = []
    for batch in args.batch_sizes:
        generator = torch.Generator().manual_seed(batch)
        vi, ir = (torch.rand(batch, 1, height, width, generator=generator).to(args.device) for _ in range(2))
        eager = Fuser(copy.deepcopy(model), FuserOptions(device=args.device, compile="off"))
        compiled = Fuser(copy.deepcopy(model), FuserOptions(device=args.device, compile="on", compile_backend=args.backend))
        _first, eager_fps, eager_out = measure(eager, vi, ir, args.iterations)
        compile_s, compiled_fps, compiled_out = measure(compiled, vi, ir, args.iterations)
        record = {
            "device": str(eager.device),
            "gpu": torch.cuda.get_device_name(eager.device) if eager.device.type == "cuda" else None,
            "model": model.spec.name,
            "dtype": str(eager.dtype).removeprefix("torch."),
            "resolution": f"{width}x{height}",
            "batch": batch,
            "backend": args.backend,
            "compiled": compiled.compiled,
            "eager_fps": round(eager_fps, 1),
            "compiled_fps": round(compiled_fps, 1),
            "speedup": round(compiled_fps / eager_fps, 2),
            "compile_s": round(compile_s, 1),
            "max_abs_diff": float((compiled_out - eager_out).abs().max()),
        }
        records.append(record)
        print(json.dumps(record))
    if args.out is not None:
        args.out.write_text(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
