#!/usr/bin/env python
"""Throughput and latency benchmark: the same as `ldfusion bench` (see `--help`).

    python scripts/bench.py --weights ../shared/data/weights/ld-lite/final.pt --resolutions 640x480 1280x720
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout without installing: the repository root holds the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ldfusion_cli.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
