"""Shared fixtures: the shared data folder (skip when absent), devices, random weights."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from ldfusion.checkpoint import save_checkpoint
from ldfusion.networks import build_network
from ldfusion.redact import MaskCredentials
from ldfusion.variants import get_variant

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository; tests that need it skip when it is absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ldlite_weights(shared_data: Path) -> Path:
    path = shared_data / "weights" / "ld-lite" / "final.pt"
    if not path.is_file():
        pytest.skip("LD-Lite weights are not in ../shared/data")
    return path


def _devices() -> list:
    devices = ["cpu"]
    devices.append("cuda" if torch.cuda.is_available() else pytest.param("cuda", marks=pytest.mark.skip(reason="no CUDA")))
    return devices


@pytest.fixture(params=_devices())
def device(request) -> torch.device:
    """Runs a test on the CPU, and again on CUDA when a GPU is present."""
    return torch.device(request.param)


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> dict[str, Path]:
    """Randomly initialised checkpoints of every variant, in our format: {variant: path}."""
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for name in ("ld-lite", "ldfusion"):
        torch.manual_seed(0)
        paths[name] = save_checkpoint(folder / f"{name}.pt", build_network(get_variant(name)))
    return paths


@pytest.fixture(autouse=True, scope="session")
def _exports_stay_in_a_temporary_cache(tmp_path_factory):
    """OpenVINO exports of bundled weights go to $LDFUSION_CACHE; tests never write to the home folder."""
    import os

    if os.environ.get("LDFUSION_CACHE"):
        yield
        return
    os.environ["LDFUSION_CACHE"] = str(tmp_path_factory.mktemp("ldfusion_cache"))
    try:
        yield
    finally:
        os.environ.pop("LDFUSION_CACHE", None)



@pytest.fixture(autouse=True)
def _command_log_handlers_removed():
    """A command's ``setup_logging`` points the root logger at the stderr pytest captured for
    that test; left in place, later tests' log lines go to a closed file ("Logging error").
    Its handlers are the ones carrying the credentials filter (pytest's own are left alone)."""
    yield
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if any(isinstance(f, MaskCredentials) for f in handler.filters):
            root.removeHandler(handler)
