"""LDFusion: infrared/visible image fusion trained with a language-driven loss in CLIP space.

The library (networks, losses, checkpoint I/O, inference) lives here; the trainer is
``ldfusion.training`` and is never imported by the library itself.
"""

__version__ = "0.1.0"

from ldfusion.errors import LDFusionError  # noqa: E402

__all__ = ["LDFusionError", "__version__"]
