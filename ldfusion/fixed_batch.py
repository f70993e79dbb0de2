"""Run a network on batches of one fixed size, whatever number of frames arrives.

A compiled network (``torch.compile(dynamic=False)``) compiles once per input shape and
cuDNN's autotuner (``cudnn.benchmark``) benchmarks once per shape; a stream of partial
batches (3 frames, then 7, then 5) makes both start over for every new size. On an H200
batch 32 ran *slower* than batch 8 in the pipeline for this reason. ``FixedBatch`` pads a
partial batch to the fixed size and slices the result back, and splits a larger batch
into fixed-size chunks, so the network sees one shape per frame size.

Padding repeats the last real row rather than adding zeros: an all-zero frame is not a
frame the network was trained on (instance normalisation of a constant image divides by
its epsilon-sized deviation), and the networks are batch-invariant
(tests/test_networks.py), so the padded rows never change the real ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class FixedBatch:
    """Calls ``fn`` on batches of exactly ``size`` rows; counts the padded rows (wasted work)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"batch size must be at least 1; got {size}")
        self.size = size
        self.calls = 0
        self.padded_rows = 0

    def __call__(self, fn: Callable[..., Tensor], *inputs: Tensor) -> Tensor:
        """``fn(*inputs)`` for (B, ...) inputs that share B, computed in chunks of ``size`` rows."""
        rows = _shared_rows(inputs)
        outputs = []
        for start in range(0, rows, self.size):
            chunk = [x[start : start + self.size] for x in inputs]
            real = chunk[0].shape[0]
            out = fn(*(pad_rows(x, self.size) for x in chunk))  # (size, ...)
            if out.shape[0] != self.size:
                raise ValueError(f"fn returned {out.shape[0]} rows for a batch of {self.size}")
            outputs.append(out[:real])
            self.calls += 1
            self.padded_rows += self.size - real
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def pad_rows(x: Tensor, size: int) -> Tensor:
    """(b, ...) with b <= size -> (size, ...), the last row repeated; ``x`` itself when b == size."""
    rows = x.shape[0]
    if rows == size:
        return x
    if not 0 < rows < size:
        raise ValueError(f"cannot pad {rows} rows to {size}")
    return torch.cat([x, x[-1:].expand(size - rows, *x.shape[1:])])


def _shared_rows(inputs: tuple[Tensor, ...]) -> int:
    if not inputs:
        raise ValueError("FixedBatch needs at least one input tensor")
    rows = {x.shape[0] for x in inputs}
    if len(rows) != 1 or 0 in rows:
        raise ValueError(f"inputs must share a non-zero batch size; got {[x.shape[0] for x in inputs]}")
    return rows.pop()
