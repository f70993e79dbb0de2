"""Host-to-device uploads through reusable pinned buffers (CUDA).

Page-locking memory costs about as much as copying it, so a buffer pinned once and refilled
every batch is what lets the copy run without blocking the host (``non_blocking=True``
copies from pageable memory are synchronous). Used by the pipeline's fusion stage for
decoded planes and by ``Fuser.fuse_arrays`` for host frames.
"""

from __future__ import annotations

import threading
import warnings
from collections import deque

import numpy as np
import torch
from torch import Tensor

_TORCH_DTYPES = {np.dtype(np.uint8).str: torch.uint8}  # planes and 8-bit frames are uint8

# The rows are copied by torch, which runs big copies on its intra-op threads with the GIL
# released; np.stack copied on one thread holding the GIL, and on an H200 machine (16 cores)
# py-spy found it taking 31% of the fusion thread at 640x512, batch 32. Torch warns that
# read-only arrays (decoder planes) are not writable; they are only read here.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning, module=__name__)


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
            for row, array in zip(buffer, arrays):
                row.copy_(torch.from_numpy(array))
            on_device = buffer.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            ring.append((buffer, event))
        return on_device
