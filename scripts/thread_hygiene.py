#!/usr/bin/env python3
"""Does the network's CPU time survive the pipeline's own decoding? Fuse 640x512 frames with
LD-Lite on PyTorch while a thread decodes the M3SVD clip beside it, once with OpenMP's
threads spinning while idle (OMP_WAIT_POLICY=ACTIVE, OpenMP's default) and once sleeping
(PASSIVE, what ldfusion sets), alternating, each in a fresh process (OpenMP reads the
policy once, at start-up).

    PYTHONPATH=. python scripts/thread_hygiene.py [--frames 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

CHILD = r"""
import json, statistics, sys, threading, time
import ldfusion  # sets OMP_WAIT_POLICY=PASSIVE unless the environment already says
import torch
from ldfusion.video import VideoReader
from ldfusion.inference import Fuser, FuserOptions
frames, clip, weights = int(sys.argv[1]), sys.argv[2], sys.argv[3]
fuser = Fuser.from_weights(weights, options=FuserOptions(device="cpu", backend="torch"))
stop = threading.Event()
decoded = [0]
def decode():
    while not stop.is_set():
        with VideoReader(clip) as reader:
            for _frame in reader:
                decoded[0] += 1
                if stop.is_set():
                    return
x = torch.rand(1, 1, 512, 640)
fuser.fuse_y(x, x)
worker = threading.Thread(target=decode, daemon=True)
worker.start()
times = []
start_all = time.perf_counter()
for _ in range(frames):
    start = time.perf_counter(); fuser.fuse_y(x, x); times.append(time.perf_counter() - start)
wall = time.perf_counter() - start_all
stop.set(); worker.join()
print(json.dumps({"median_ms": 1000 * statistics.median(times), "decoded_fps": decoded[0] / wall, "threads": torch.get_num_threads()}))
"""


def run(policy: str, frames: int, clip: str, weights: str) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    out = subprocess.run([sys.executable, "-c", CHILD, str(frames), clip, weights], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clip", default=str(SHARED / "video/m3svd/visible/0111_1716.mp4"))
    parser.add_argument("--weights", default=str(SHARED / "weights/ld-lite/final.pt"))
    args = parser.parse_args(argv)
    results: dict[str, list[dict]] = {"ACTIVE": [], "PASSIVE": []}
    for _ in range(args.repeats):
        for policy in results:
            results[policy].append(run(policy, args.frames, args.clip, args.weights))
    print("| OMP_WAIT_POLICY | network ms/frame (median of runs) | decoder fps beside it |\n|---|---|---|")
    for policy, runs in results.items():
        print(f"| {policy} | {statistics.median(r['median_ms'] for r in runs):.0f} | {statistics.median(r['decoded_fps'] for r in runs):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
