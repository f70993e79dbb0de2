"""Threads on a shared CPU: how many the network uses, and how idle ones wait.

Two things make a CPU pipeline slow on a small machine. OpenMP's worker threads (PyTorch's,
and OpenVINO's) spin while they wait for work by default; when another process, or the
pipeline's own decode and encode threads, holds a core, the spinning threads steal it and a
frame that takes 0.2-0.4 s took 1.4-3.3 s (measured on 2 cores with one busy neighbour).
``OMP_WAIT_POLICY=PASSIVE`` makes them sleep instead. OpenMP reads it once, when the
runtime loads with ``import torch``: so ``ldfusion/__init__.py`` sets it (unless the user
did) before any submodule imports torch, and ``passive_waiting`` reports whether it is in
force.

Thread counts come from the cores this process may run on (``sched_getaffinity``, which
respects taskset and container CPU sets), not from the host's total.
"""

from __future__ import annotations

import logging
import os

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
