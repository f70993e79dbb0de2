"""Threads on a shared CPU: how many the network uses, and how idle ones wait.

Two things make a CPU pipeline slow on a small machine. OpenMP's worker threads (PyTorch's,
and OpenVINO's) spin while they wait for work by default; when another process, or the
pipeline's own decode and encode threads, holds a core, the spinning threads steal it and a
frame that takes 0.2-0.4 s took 1.4-3.3 s (measured on 2 cores with one busy neighbour).
``OMP_WAIT_POLICY=PASSIVE`` makes them sleep instead. OpenMP reads it once, when the
runtime loads with ``import torch``: so ``ldfusion/__init__.py`` sets it (unless the user
did) before any submodule imports torch, and ``passive_waiting`` reports whether it is in
force.

Small tensor ops beside the network (a pipeline's range conversion, checks, merges: passes
of 0.02-0.1 ms over a frame) run on one thread (``torch_threads(1)`` in the fusion
thread): OpenMP would wake a second thread for each, on a core the decoders are using, and
the wake-ups cost more than they save (the pipeline with an identity network at 640x512 on
2 cores: 1.2-1.5 instead of 1.6-2.5 ms of CPU a frame, and a quarter to a half more frames a
second). The network
itself still gets ``network_threads()`` (``Fuser`` sets them around each call).

Thread counts come from the cores this process may run on (``sched_getaffinity``, which
respects taskset and container CPU sets), not from the host's total.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)

THREADS_ENV = "LDFUSION_NETWORK_THREADS"


def available_cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def network_threads() -> int:
    """Threads for one network call on the CPU: every available core, or ``$LDFUSION_NETWORK_THREADS``.

    The pipeline's decoders and encoders run between network calls and mostly wait on the
    network; with passive waiting, giving the network every core is fastest (measured
    with ``scripts/thread_hygiene.py``).
    """
    value = os.environ.get(THREADS_ENV)
    if value:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            from ldfusion.errors import ConfigError

            raise ConfigError(f"{THREADS_ENV}={value!r}: must be a positive whole number")
        return threads
    return available_cores()


def decoder_threads(concurrent_readers: int) -> int:
    """FFmpeg threads for each of ``concurrent_readers`` video decoders that run side by side
    (a pipeline's reader threads): the cores shared out, at least one each.

    FFmpeg's own choice gives every decoder a thread per core; two readers on 2 cores then
    run six threads that hand frames between them and fight the fusion thread. One each there:
    the pipeline with an identity network at 640x512 went from 730 to 890 frames a second
    (batch 4; loaded machine, interleaved runs). One decoder alone (``bench --paths decode``)
    keeps FFmpeg's choice.
    """
    return max(1, available_cores() // max(1, concurrent_readers))


def passive_waiting() -> bool:
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


def configure_torch_threads() -> int:
    """Give PyTorch's CPU ops ``network_threads()`` threads; returns the count."""
    import torch

    threads = network_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if not passive_waiting():
        log.info("OMP_WAIT_POLICY is not PASSIVE (torch was imported before ldfusion?): idle CPU threads will spin")
    return threads


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """PyTorch's CPU ops in this block, in the calling OS thread, use ``count`` threads.

    PyTorch's CPU builds parallelise with OpenMP, whose thread count belongs to the calling
    thread: other threads that already ran an op keep theirs. A thread that runs its first
    op later starts with the count last set anywhere, so the previous count is set again on
    the way out.
    """
    import torch

    previous = torch.get_num_threads()
    if previous == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
