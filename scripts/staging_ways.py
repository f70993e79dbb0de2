"""Ways to fill the pinned batch buffers that frames are uploaded from (CUDA), compared.

    PYTHONPATH=. python scripts/staging_ways.py --clip VIDEO --weights W [--size 640x512] [--frames 2048]

Two measurements: each way's host copy alone, on the clip's decoded Y planes (batches of 32,
copied right after decoding, as in the pipeline); then the whole pipeline without sinks
(`pipeline.bench`'s synthetic clip), with an identity network and with the weights, each way
in turn for ``--rounds`` rounds, so the ways are compared within one run on one machine.
Only ``PinnedStaging.fill``, the host copy, changes between ways. Without CUDA the buffers are
not pinned and the pipeline does not stage (a check of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ldfusion import staging  # noqa: E402
from ldfusion.checkpoint import load_model  # noqa: E402
from ldfusion.inference import Fuser, FuserOptions  # noqa: E402
from ldfusion.video import VideoReader  # noqa: E402
from pipeline.bench import IdentityFusion, parse_resolution, pipeline_config, synthetic_frames, write_clip  # noqa: E402
from pipeline.runner import run_pipeline  # noqa: E402


def torch_rows(buffer: torch.Tensor, arrays: list[np.ndarray]) -> None:
    for row, array in zip(buffer, arrays):
        row.copy_(torch.from_numpy(array))  # split over torch's intra-op threads


def torch_rows_one_thread(buffer: torch.Tensor, arrays: list[np.ndarray]) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch_rows(buffer, arrays)
    finally:
        torch.set_num_threads(threads)


WAYS = {"torch copy_": torch_rows, "torch copy_, 1 thread": torch_rows_one_thread,
        "numpy copyto (now)": staging.PinnedStaging.fill}


def copy_alone(clip: str, batch: int, rounds: int) -> dict[str, float]:
    """Median microseconds per plane for each way, on the same decoded batches."""
    times: dict[str, list[float]] = {name: [] for name in WAYS}
    buffers: dict[str, torch.Tensor] = {}
    for _ in range(rounds):
        with VideoReader(clip) as reader:
            rows = []
            for frame in reader:
                rows.append(frame.planes.data[0])
                if len(rows) < batch:
                    continue
                for name, fill in WAYS.items():
                    buffer = buffers.setdefault(name, torch.empty((batch, *rows[0].shape), dtype=torch.uint8, pin_memory=torch.cuda.is_available()))
                    start = time.perf_counter()
                    fill(buffer, rows)
                    times[name].append(time.perf_counter() - start)
                rows = []
    return {name: float(np.median(values[1:]) / batch * 1e6) for name, values in times.items()}


def pipelines(weights: str, size: tuple[int, int], frames: int, batch: int, rounds: int) -> list[dict]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fusers = {"passthrough": Fuser(IdentityFusion(), FuserOptions(device=device, half=False)),
              "pipeline": Fuser(load_model(weights), FuserOptions(device=device))}
    original, results = staging.PinnedStaging.fill, []
    with tempfile.TemporaryDirectory() as folder:
        ir, vi = write_clip(synthetic_frames(*size), Path(folder), count=frames)
        try:
            for round_ in range(rounds):
                for path, fuser in fusers.items():
                    for name, fill in WAYS.items():
                        staging.PinnedStaging.fill = staticmethod(fill)
                        summary = run_pipeline(pipeline_config(ir, vi, batch, device), fuser=fuser)
                        results.append({"round": round_, "path": path, "way": name, "fps": round(float(summary.fps), 1)})
                        print(json.dumps(results[-1]), flush=True)
        finally:
            staging.PinnedStaging.fill = staticmethod(original)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", required=True, help="a video whose decoded planes are copied")
    parser.add_argument("--weights", required=True, help="network weights for the pipeline runs")
    parser.add_argument("--size", type=parse_resolution, default=(640, 512), help="pipeline frame size (default 640x512)")
    parser.add_argument("--frames", type=int, default=2048, help="frames per pipeline run (default 2048)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--out", help="JSON results")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # decoder planes, only read
    alone = copy_alone(args.clip, args.batch, 6)
    for name, us in alone.items():
        print(f"{name:22s} {us:7.1f} us a plane, alone")
    results = pipelines(args.weights, args.size, args.frames, args.batch, args.rounds)
    if args.out:
        Path(args.out).write_text(json.dumps({"alone_us_per_plane": alone, "pipeline": results}, indent=1))


if __name__ == "__main__":
    main()
