"""How fast candidate CPU student layouts run, before distilling any of them.

Random weights (speed does not depend on them), 640x512, batch 1, the network call alone on
OpenVINO in float32 and in int8 (``ldfusion.export``'s recipe, calibrated on random frames:
accuracy means nothing here), each against LD-Lite on PyTorch, all interleaved in one
process so that the machine's drift hits every row alike. A layout must clear the bars of
issue 14 here (4x in float, 8x in int8) before it is worth the hours a distillation takes.

Run from the repository root: ``python scripts/layout_speed.py [--rounds 7]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ldfusion.backends import OpenVinoNetwork, float_precision  # noqa: E402
from ldfusion.export import convert_openvino, quantize_int8  # noqa: E402
from ldfusion.networks import build_network  # noqa: E402
from ldfusion.threads import network_threads  # noqa: E402
from ldfusion.variants import VariantSpec, get_variant  # noqa: E402


def candidate_layouts() -> dict[str, VariantSpec]:
    ld_lite = get_variant("ld-lite")  # encoders 8-16-32-64, decoder 64-32-16, 7x7 output conv
    return {
        "ld-lite": ld_lite,
        "decoder 64-32-8": replace(ld_lite, name="decoder-8", decoder_widths=(64, 32, 8)),
        "encoders 4-16-32-64, decoder 64-32-8": replace(ld_lite, name="enc4-dec8", encoder_widths=(4, 16, 32, 64), decoder_widths=(64, 32, 8)),
        "fast-wide-code": get_variant("fast-wide-code"),
        "fast": get_variant("fast"),
        "fast with LD-Lite's 1/8 level and 7x7 output": replace(get_variant("fast"), name="fast-code", encoder_widths=(4, 8, 16, 64),
                                                                 decoder_widths=(32, 16, 8), out_kernel=7),
        "fast with wide middle levels (encoders 4-16-32-32, decoder 64-16-8)": replace(get_variant("fast"), name="fast-mid",
                                                                                      encoder_widths=(4, 16, 32, 32),
                                                                                      decoder_widths=(64, 16, 8)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # NNCF's progress output
    torch.set_num_threads(network_threads())
    generator = torch.Generator().manual_seed(0)
    vi, ir = torch.rand((1, 1, 512, 640), generator=generator), torch.rand((1, 1, 512, 640), generator=generator)
    calibration = [(torch.rand((1, 1, 256, 320), generator=generator), torch.rand((1, 1, 256, 320), generator=generator)) for _ in range(4)]

    reference = build_network(get_variant("ld-lite")).eval()
    calls = {"LD-Lite, PyTorch": lambda: reference(vi, ir)}
    for name, spec in candidate_layouts().items():
        net = build_network(spec).eval()
        float_net = OpenVinoNetwork(convert_openvino(net), spec, network_threads(), "f32", 1)
        int8_net = OpenVinoNetwork(quantize_int8(convert_openvino(net), calibration), spec, network_threads(), float_precision("auto", True), 1)
        calls[f"{name}, float32"] = lambda n=float_net: n(vi, ir)
        calls[f"{name}, int8"] = lambda n=int8_net: n(vi, ir)

    seconds: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for call in calls.values():
            call()  # OpenVINO compiles for the shape on its first call
        for _ in range(args.rounds):
            for name, call in calls.items():
                started = time.perf_counter()
                call()
                seconds[name].append(time.perf_counter() - started)
    baseline = float(np.median(seconds["LD-Lite, PyTorch"]))
    print(f"640x512, batch 1, {network_threads()} threads, median of {args.rounds} interleaved rounds")
    print("| layout, runtime | ms | vs LD-Lite on PyTorch |\n|---|---|---|")
    for name, values in seconds.items():
        median = float(np.median(values))
        print(f"| {name} | {1e3 * median:.1f} | {baseline / median:.2f}x |")


if __name__ == "__main__":
    main()
