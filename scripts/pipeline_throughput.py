"""Pipeline throughput and latency on a synthetic pair, with no sinks (frames are discarded).

Measures what `run_pipeline` sustains end to end (decode, pair, register, fuse, hand over)
for a frame size and batch size, on the device given. Prints one line per batch size.

    python scripts/pipeline_throughput.py --size 640x480 --frames 60 --batch 1 4 --device cpu
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ldfusion.config import from_dict
from ldfusion.inference import Fuser, FuserOptions
from pipeline.config import PipelineConfig
from pipeline.runner import run_pipeline


def synthetic_video(path: Path, frames: int, width: int, height: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30), options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.roll(base, 2 * i, axis=1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--streams", type=int, default=1, help="stream pairs fused together")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--weights", default=None, help="weights (default: random ld-lite, which is as fast as trained)")
    parser.add_argument("--variant", default="ld-lite")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    width, height = (int(v) for v in args.size.lower().split("x"))

    if args.weights:
        fuser = Fuser.from_weights(args.weights, None, FuserOptions(device=args.device))
    else:
        from ldfusion.networks import build_network
        from ldfusion.variants import get_variant

        fuser = Fuser(build_network(get_variant(args.variant)), FuserOptions(device=args.device))
    with tempfile.TemporaryDirectory() as tmp:
        ir = synthetic_video(Path(tmp) / "ir.mp4", args.frames, width, height, 1)
        vi = synthetic_video(Path(tmp) / "vi.mp4", args.frames, width, height, 2)
        streams = [{"id": f"s{i}", "ir": {"path": str(ir)}, "visible": {"path": str(vi)}} for i in range(args.streams)]
        print(f"{fuser.spec.name} on {fuser.device} ({fuser.dtype}), {args.streams} x {args.frames} frames of {width}x{height}")
        for batch in args.batch:
            config = from_dict(PipelineConfig, {"streams": streams, "model": {"batch_size": batch, "max_wait_ms": 20},
                                                "run": {"progress": False, "stats_interval_s": 3600}})
            s = run_pipeline(config, fuser)
            print(f"batch {batch}: {s.frames_out} frames in {s.wall_s:.2f} s = {s.fps:.1f} fps; "
                  f"latency p50 {s.latency_ms_p50:.0f} ms, p99 {s.latency_ms_p99:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
