"""Host-to-device uploads through reusable pinned buffers (CUDA).

Page-locking memory costs about as much as copying it, so a buffer pinned once and refilled
every batch is what lets the copy run without blocking the host (``non_blocking=True``
copies from pageable memory are synchronous). Used by the pipeline's fusion stage for
decoded planes and by ``Fuser.fuse_arrays`` for host frames.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
import torch
from torch import Tensor

_TORCH_DTYPES = {np.dtype(np.uint8).str: torch.uint8}  # planes and 8-bit frames are uint8

# The rows are copied by NumPy (``np.copyto`` into the pinned buffer's own array), one row at a
# time, with the GIL released. On an H200 machine (16 cores), 640x512, batch 32, the pipeline
# with an identity network ran at 1624 / 1779 fps with torch's ``copy_``, 2439 / 2670 with
# NumPy and 2251 / 2208 with torch held to one thread (``scripts/staging_ways.py``, two
# interleaved rounds). Alone, torch's copy is the fastest (33 against 45 us a 640x480 plane):
# it splits each row over its 16 intra-op threads, which in the pipeline compete with the
# decoders' threads. ``np.stack`` (before torch) took 31% of the fusion thread there.


class PinnedStaging:
    """``upload``: same-shaped uint8 arrays -> one stacked tensor on ``device``, through a
    small ring of pinned buffers per shape.

    A buffer is refilled only after the copy that last read it has finished (a CUDA event
    recorded after the copy), so the next batch never overwrites data still in flight.
    Safe to share between threads (one upload at a time).
    """

    def __init__(self, device: torch.device, depth: int = 3) -> None:
        self.device = device
        self.depth = depth
        self._rings: dict[tuple, deque] = {}
        self._lock = threading.Lock()

    def upload(self, arrays: list[np.ndarray]) -> Tensor:
        """Stack same-shaped arrays into a pinned buffer and start its copy to the device."""
        key = ((len(arrays), *arrays[0].shape), arrays[0].dtype.str)
        with self._lock:
            ring = self._rings.setdefault(key, deque())
            if len(ring) < self.depth:
                buffer, done = torch.empty(key[0], dtype=_TORCH_DTYPES[arrays[0].dtype.str], pin_memory=True), None
            else:
                buffer, done = ring.popleft()
                done.synchronize()  # the copy that last read this buffer has finished
            self.fill(buffer, arrays)
            on_device = buffer.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            ring.append((buffer, event))
        return on_device

    @staticmethod
    def fill(buffer: Tensor, arrays: list[np.ndarray]) -> None:
        """The host copy: each array into its row of the pinned buffer (comment above)."""
        for row, array in zip(buffer.numpy(), arrays):
            np.copyto(row, array)
