"""Where commands write: outputs never overwrite inputs (whether two paths name one file), folders are folders."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ldfusion.errors import DataError


def file_key(path: str | os.PathLike) -> tuple:
    """What identifies the file ``path`` names: its device and inode when it exists, so that a
    hard link or another path to it matches; else its path with links and ``..`` resolved."""
    try:
        status = os.stat(path)
    except OSError:
        return ("path", str(Path(path).resolve()))
    return ("inode", status.st_dev, status.st_ino)


def check_output_folder(path: Path, option: str = "--out") -> None:
    """A folder a command writes into is absent (it is made) or a folder, never a file."""
    if path.exists() and not path.is_dir():
        raise DataError(f"{option} {path} is a file, not a folder")


def refuse_overwriting_inputs(outputs: Iterable[Path], inputs: Iterable[Path], option: str) -> None:
    """A one-line error naming ``option`` when writing any of ``outputs`` would replace one of ``inputs``."""
    taken = {file_key(path): path for path in inputs}
    for output in outputs:
        given = taken.get(file_key(output))
        if given is not None:
            raise DataError(f"{option}: writing {output} would overwrite the input {given}; choose another place")
