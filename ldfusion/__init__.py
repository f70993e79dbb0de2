"""LDFusion: infrared/visible image fusion trained with a language-driven loss in CLIP space.

The library (networks, losses, checkpoint I/O, inference) lives here; the trainer is
``ldfusion.training`` and is never imported by the library itself.
"""

import os

__version__ = "0.1.0"

# Idle OpenMP threads sleep instead of spinning on a shared CPU (see ldfusion/threads.py).
# It must be in the environment before torch loads OpenMP; the user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ldfusion.errors import LDFusionError  # noqa: E402

__all__ = ["LDFusionError", "__version__"]
