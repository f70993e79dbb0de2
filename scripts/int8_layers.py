#!/usr/bin/env python3
"""Which layers lose accuracy in int8: quantize a network's OpenVINO export with NNCF,
keeping different sets of layers in float (the first convs, the output conv, the transposed
convs, the norms' inputs; symmetric or asymmetric "mixed" activations), and measure agreement
with float LD-Lite on PyTorch on the twelve held-out pairs and the speed at 640x512
(interleaved in one process).

    PYTHONPATH=. python scripts/int8_layers.py [--weights default] [--only "none" ...]

Calibration: whole frames of training pairs (MSRS by default), never the held-out ones
measured here. The int8 runs compute their float layers as the pipeline does
(``ldfusion.backends.float_precision``: bf16 where the CPU has it natively).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from ldfusion.backends import OpenVinoNetwork, float_precision
from ldfusion.export import Int8Options, agreement_db, calibration_pairs, convert_openvino, quantize_int8
from ldfusion.imageio import read_pair
from ldfusion.inference import to_chw_float, to_y_batch
from ldfusion.weights import resolve_model
from teacher_agreement import REPO, SHARED, held_out_pairs  # scripts/: one list of held-out pairs

CHOICES = {
    "none": Int8Options(keep_float=(), float_norm_inputs=False),
    "first+last": Int8Options(float_norm_inputs=False),
    "first+last, mixed": Int8Options(float_norm_inputs=False, mixed=True),
    "norm inputs": Int8Options(keep_float=()),
    "first + norm inputs": Int8Options(keep_float=("first",)),
    "last + norm inputs": Int8Options(keep_float=("last",)),
    "first+last + norm inputs (ldfusion's)": Int8Options(),
    "first+last+transposed + norm inputs": Int8Options(keep_float=("first", "last", "transposed")),
}


def held_out(count: int):
    """The first ``count`` held-out pairs of scripts/teacher_agreement.py, as (vi_y, ir) tensors."""
    out = []
    for _dataset, pair in held_out_pairs(REPO / "configs/distill_default.yaml")[:count]:
        visible, ir = read_pair(pair)
        out.append((to_y_batch(visible), to_chw_float(ir)[None]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=str(SHARED / "weights/ld-lite/final.pt"))
    parser.add_argument("--teacher", default=str(SHARED / "weights/ld-lite/final.pt"), help="the reference (default: float LD-Lite)")
    parser.add_argument("--calib-ir", default=str(SHARED / "pairs/msrs/ir"))
    parser.add_argument("--calib-vi", default=str(SHARED / "pairs/msrs/vi"))
    parser.add_argument("--pairs", type=int, default=12, help="held-out pairs to measure agreement on")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", nargs="+", choices=list(CHOICES), help="measure only these (default: all)")
    args = parser.parse_args(argv)
    model = resolve_model(args.weights).eval()
    teacher = resolve_model(args.teacher).eval()
    calibration = calibration_pairs(args.calib_ir, args.calib_vi, 32)
    float_ov = convert_openvino(model)
    runs = {"float32": OpenVinoNetwork(float_ov, model.spec, precision="f32")}
    chosen = args.only or list(CHOICES)
    for label in chosen:
        int8 = quantize_int8(convert_openvino(model), calibration, CHOICES[label])
        runs[f"int8, float: {label}"] = OpenVinoNetwork(int8, model.spec, precision=float_precision(int8=True))  # as the pipeline runs it
    pairs = held_out(args.pairs)
    with torch.inference_mode():
        references = [teacher(vi, ir) for vi, ir in pairs]
    frame = (torch.rand(1, 1, 512, 640), torch.rand(1, 1, 512, 640))
    times: dict[str, list[float]] = {label: [] for label in runs}
    for network in runs.values():
        network(*frame)
    for _ in range(args.repeats):
        for label, network in runs.items():
            start = time.perf_counter()
            network(*frame)
            times[label].append(time.perf_counter() - start)
    base = statistics.median(times["float32"])
    print(f"{Path(args.weights).name}: agreement with float {Path(args.teacher).name} on PyTorch, {len(pairs)} held-out pairs; "
          f"speed at 640x512; int8 runs keep their float layers in {float_precision(int8=True)}")
    print("| OpenVINO | mean PSNR (dB) | worst (dB) | median ms | vs float32 |\n|---|---|---|---|---|")
    for label, network in runs.items():
        scores = [agreement_db(ref, network(vi, ir)) for ref, (vi, ir) in zip(references, pairs)]
        median = statistics.median(times[label])
        print(f"| {label} | {statistics.mean(scores):.1f} | {min(scores):.1f} | {median * 1000:.1f} | {base / median:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
