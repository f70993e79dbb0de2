#!/usr/bin/env python3
"""Copy a training checkpoint's weights into the package as the bundled `default` weights.

Drops the optimizer state (the bundled file stays ~2.6 MB) and keeps the training config
plus where the weights came from (epoch, step), so `torch.load(..., weights_only=True)` of
ldfusion/bundled/default.pt tells how it was made.

    python scripts/export_default_weights.py runs/distill_default/last.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ldfusion.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from ldfusion.weights import BUNDLED_DIR, sha256_of


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a last.pt or model.pt written by `ldfusion train`")
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR / "default.pt", help="where to write (default: the bundled file)")
    args = parser.parse_args(argv)
    ckpt = load_checkpoint(args.checkpoint)
    training = ckpt.training or {}
    config = dict(ckpt.config)
    config["provenance"] = {"epoch": training.get("epoch"), "step": training.get("step"), "source": args.checkpoint.name}
    save_checkpoint(args.out, model_from_checkpoint(ckpt), config=config)
    print(f"wrote {args.out} ({ckpt.spec.name}, epoch {training.get('epoch')}, step {training.get('step')}), sha256 {sha256_of(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
