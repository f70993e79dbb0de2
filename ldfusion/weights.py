"""Where weights come from: one registry of names, or a path.

- ``auto`` (what None means to ``Fuser.from_weights``): ``fast`` on the CPU, ``default`` on
  CUDA; see ``choose_weights``.
- ``default``: trained by this project and shipped inside the package (works offline).
- ``fast``: the CPU student of LD-Lite, trained by this project, shipped in the package.
- ``ld-lite``, ``ldfusion``: the authors' releases. Looked up, in order, in the
  environment variable named by the entry (a local file or folder), in the cache
  (``$LDFUSION_CACHE`` or ``~/.cache/ldfusion``), and finally downloaded from the
  published URL into the cache, checked against its sha256 when one is pinned.
- anything else is a path to a weights file (or an ``Enc_*``/``Dec_*`` folder).
"""

from __future__ import annotations

import hashlib
import logging
import os
import typing
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ldfusion.checkpoint import load_model
from ldfusion.errors import CheckpointError
from ldfusion.networks import FusionNet
from ldfusion.paths import home_expanded, replaced_whole

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
DEFAULT_WEIGHTS = "default"
AUTO_WEIGHTS = "auto"
# What ``auto`` picks on the CPU. Only weights that meet the project's quality bar against
# LD-Lite (MODEL_CARD.md: >= 33 dB mean PSNR on the held-out pairs, none below 30 dB) may
# stand here.
CPU_AUTO_WEIGHTS = "default"
# Whether ``auto`` on the CPU also runs those weights in int8, through the OpenVINO int8
# export shipped in ldfusion/bundled (scripts/bundle_int8.py). ``default``'s agrees with
# LD-Lite to 35.42 dB mean, 31.77 dB on the worst held-out pair with its float layers in f32,
# 35.17 / 31.11 dB in bf16 (backends.float_precision; MODEL_CARD.md): inside the bar either way.
CPU_AUTO_INT8 = True

if typing.TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    url: str
    sha256: str | None  # None: the publisher gave no hash; we log what we got


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    variant: str
    env_var: str
    files: tuple[RemoteFile, ...] = ()
    bundled: str | None = None  # file name inside ldfusion/bundled/
    license: str = ""


REGISTRY: dict[str, WeightsEntry] = {
    "default": WeightsEntry(
        name="default",
        variant="ld-lite",
        env_var="LDFUSION_WEIGHTS_DEFAULT",
        bundled="default.pt",
        license="Apache-2.0 (see MODEL_CARD.md)",
    ),
    "fast": WeightsEntry(
        name="fast",
        variant="fast",
        env_var="LDFUSION_WEIGHTS_FAST",
        bundled="fast.pt",
        license="Apache-2.0 (see MODEL_CARD.md)",
    ),
    "ld-lite": WeightsEntry(
        name="ld-lite",
        variant="ld-lite",
        env_var="LDFUSION_WEIGHTS_LD_LITE",
        files=(
            RemoteFile(
                "final.pt",
                "https://github.com/wyhlaowang/LD-Lite/raw/main/weight/final.pt",
                "38099dbf221a951609439692f6693e8283d49e118cb2576906fda9df6ea454ea",
            ),
        ),
        license="Apache-2.0, Wang et al., github.com/wyhlaowang/LD-Lite",
    ),
    # Not pinned: the authors publish no hash, and the files are not in this project's data
    # (no network where it is built), so no one here has seen them to hash them. What keeps an
    # unpinned download safe: it is loaded with weights_only=True (no code runs), checked
    # against the variant's exact layout and for finite values, and its sha256 is logged at
    # download so a user can compare it and pin it here.
    "ldfusion": WeightsEntry(
        name="ldfusion",
        variant="ldfusion",
        env_var="LDFUSION_WEIGHTS_LDFUSION",
        files=(
            RemoteFile("Enc_final.pt", "https://github.com/wyhlaowang/LDFusion/raw/main/weight/Enc_final.pt", None),
            RemoteFile("Dec_final.pt", "https://github.com/wyhlaowang/LDFusion/raw/main/weight/Dec_final.pt", None),
        ),
        license="Apache-2.0, Wang et al., github.com/wyhlaowang/LDFusion",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("LDFUSION_CACHE") or Path.home() / ".cache" / "ldfusion")


def weights_names() -> str:
    """The names a weights option takes, read from the registry (a list typed into a message
    falls behind it)."""
    return ", ".join([f"{AUTO_WEIGHTS} (bundled weights chosen for the device)", *sorted(REGISTRY)])


def is_auto(name: str | os.PathLike | None) -> bool:
    """Whether ``name`` leaves the choice of weights to ldfusion (``auto``, or not given)."""
    return name is None or str(name) == AUTO_WEIGHTS


def choose_weights(name: str | os.PathLike | None, device: "torch.device") -> str | os.PathLike:
    """Resolve ``auto`` (or None) for ``device``; any other name or path passes through.

    On the CPU, ``CPU_AUTO_WEIGHTS`` (only weights that meet the quality bar; see also
    ``CPU_AUTO_INT8``); on CUDA, ``default`` (LD-Lite's layout runs in real time there).
    """
    if not is_auto(name):
        return name
    if device.type == "cpu":
        choice, why = CPU_AUTO_WEIGHTS, "the device is the CPU"
        if choice == "fast":
            why += "; the fast student is ~4x cheaper than LD-Lite's layout"
        else:
            why += "; the fast student is below the quality bar yet (MODEL_CARD.md)"
    else:
        choice, why = DEFAULT_WEIGHTS, f"the device is {device.type}, fast enough for the full-size network"
    log.info("weights auto: using %r (%s)", choice, why)
    return choice


def resolve_weights_path(name_or_path: str | os.PathLike | None) -> Path:
    """Turn a registry name or a path into a local file (or folder) to load."""
    name = str(name_or_path) if name_or_path is not None else DEFAULT_WEIGHTS
    if not name.strip():  # Path("") is the current folder, which a weights folder lookup would then search
        raise CheckpointError(f"weights: the name is empty; give a file or one of: {weights_names()}")
    entry = REGISTRY.get(name)
    if entry is None:
        path = Path(home_expanded(str(name)))
        if not path.exists():
            raise CheckpointError(f"weights not found: {name!r} is neither a file nor one of: {weights_names()}")
        return path
    from_env = os.environ.get(entry.env_var)
    if from_env:
        path = Path(home_expanded(from_env))
        if not path.exists():
            raise CheckpointError(f"{entry.env_var}={from_env}: no such file or folder")
        return path
    if entry.bundled:
        path = BUNDLED_DIR / entry.bundled
        if not path.is_file():
            raise CheckpointError(f"the bundled {name!r} weights are missing from this installation ({path})")
        return path
    return fetch_into_cache(entry)


def resolve_model(weights: str | os.PathLike | None = None, variant: str | None = None) -> FusionNet:
    """Load the network for ``weights`` (registry name or path; None = the bundled default)."""
    path = resolve_weights_path(weights)
    entry = REGISTRY.get(str(weights) if weights is not None else DEFAULT_WEIGHTS)
    if variant is None and entry is not None:
        variant = entry.variant
    model = load_model(path, variant)
    log.info("loaded %s weights from %s", model.spec.name, path)
    return model


def fetch_into_cache(entry: WeightsEntry, root: Path | None = None) -> Path:
    """Make every file of ``entry`` present and verified in the cache; returns the file or folder to load."""
    folder = (root or cache_dir()) / entry.name
    for remote in entry.files:
        target = folder / remote.filename
        if target.is_file() and _hash_ok(target, remote):
            continue
        _download(remote, target, entry)
    return folder / entry.files[0].filename if len(entry.files) == 1 else folder


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_ok(path: Path, remote: RemoteFile) -> bool:
    if remote.sha256 is None:
        return True
    actual = sha256_of(path)
    if actual != remote.sha256:
        log.warning("cached %s has sha256 %s, expected %s; fetching it again", path, actual, remote.sha256)
        return False
    return True


def _download(remote: RemoteFile, target: Path, entry: WeightsEntry) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with replaced_whole(target, suffix=".part") as tmp:  # a refused or broken download never lands at target
        log.info("downloading %s weights from %s", entry.name, remote.url)
        try:
            with open(tmp, "wb") as out, urllib.request.urlopen(remote.url, timeout=60) as response:
                _copy_with_progress(response, out, remote.filename)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"could not download {entry.name!r} weights from {remote.url} ({exc}); "
                f"set {entry.env_var}=/path/to/{remote.filename}, or give a file's path in place of the name {entry.name!r}"
            ) from None
        actual = sha256_of(tmp)
        if remote.sha256 is not None and actual != remote.sha256:
            raise CheckpointError(
                f"refused {remote.url}: sha256 {actual} does not match the pinned {remote.sha256}"
            )
        if remote.sha256 is None:
            log.warning("%s has no pinned sha256; downloaded file has sha256 %s", remote.url, actual)


def _copy_with_progress(response, out, label: str) -> None:
    from tqdm.auto import tqdm

    total = int(response.headers.get("Content-Length") or 0) or None
    with tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False) as bar:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            out.write(chunk)
            bar.update(len(chunk))
