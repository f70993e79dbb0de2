"""The ceiling `scripts/local_affine_bound.py` puts on blend-only CPU students: its fit must be exact
where the output is a smooth blend of the inputs, and must not be where it is not."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def bound():
    sys.path.insert(0, str(SCRIPTS))  # it imports teacher_agreement, beside it
    try:
        spec = importlib.util.spec_from_file_location("local_affine_bound", SCRIPTS / "local_affine_bound.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


def textured(seed: int, shape=(96, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.uniform(0, 1, shape), (0, 0), 1.5)


def test_a_blend_with_constant_weights_is_recovered_exactly(bound):
    ir, vi = textured(0), textured(1)
    fused = 0.3 * ir + 0.6 * vi + 0.05
    a, b, c = bound.local_affine_fit(ir, vi, fused, radius=4, eps=1e-12)
    assert np.allclose(a, 0.3, atol=1e-6) and np.allclose(b, 0.6, atol=1e-6) and np.allclose(c, 0.05, atol=1e-6)
    assert min(bound.bounds(ir, vi, fused, radius=4).values()) > 50  # eps=1e-4 (the script's) regularises the fit slightly


def test_detail_that_neither_input_has_is_not_reachable(bound):
    """An output with structure of its own (here the inputs' product, plus a third texture) stays
    well below the exact case, and more so the wider the windows."""
    ir, vi = textured(0), textured(1)
    fused = 0.5 * ir * vi + 0.2 * textured(2)
    narrow, wide = bound.bounds(ir, vi, fused, radius=2), bound.bounds(ir, vi, fused, radius=8)
    assert max(narrow.values()) < 50
    assert wide["guided"] < narrow["guided"] and wide["grid"] < narrow["grid"]
