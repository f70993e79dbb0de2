"""Where commands write: outputs never overwrite inputs (whether two paths name one file),
folders are folders, and a file is replaced whole or not at all."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from ldfusion.errors import DataError


def home_expanded(text: str) -> str:
    """``~`` and ``~/...`` as the home folder, as a shell does: a config's ``out_dir: ~/runs`` (or a
    quoted ``--out '~/runs'``) wrote into a folder named ``~`` in the current folder, exit 0."""
    return os.path.expanduser(text) if text == "~" or text.startswith("~/") else text


def file_key(path: str | os.PathLike) -> tuple:
    """What identifies the file ``path`` names: its device and inode when it exists, so that a
    hard link or another path to it matches; else its path with links and ``..`` resolved.

    Resolved first: ``missing/../input.csv`` cannot be opened while ``missing`` does not exist,
    but a command makes its output's folders before writing, and then it is ``input.csv``
    (taken for a new file, it was overwritten)."""
    resolved = os.path.realpath(path)
    try:
        status = os.stat(resolved)
    except OSError:
        return ("path", resolved)
    return ("inode", status.st_dev, status.st_ino)


def check_output_folder(path: Path, option: str = "--out") -> None:
    """A folder a command writes into is absent (it is made) or a folder, never a file."""
    if path.exists() and not path.is_dir():
        raise DataError(f"{option} {path} is a file, not a folder")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name one existing file or folder (a hard link or another spelling
    included): given for both cameras, every frame would be paired with itself."""
    return Path(a).exists() and file_key(a) == file_key(b)


def refuse_overwriting_inputs(outputs: Iterable[Path], inputs: Iterable[Path], option: str) -> None:
    """A one-line error naming ``option`` when writing any of ``outputs`` would replace one of ``inputs``."""
    taken = {file_key(path): path for path in inputs}
    for output in outputs:
        given = taken.get(file_key(output))
        if given is not None:
            raise DataError(f"{option}: writing {output} would overwrite the input {given}; choose another place")


def refuse_an_input_folder(folder: Path, inputs: Iterable[Path], option: str) -> None:
    """A one-line error naming ``option`` when ``folder``, where PNGs are written, holds one of
    ``inputs``: fused ``a.png`` beside a visible ``a.jpg`` was accepted, and the next run over
    that folder refused it (two images named ``a``), or took the fused image for an input.
    ``missing/../vi`` is the folder ``vi`` too (``file_key`` resolves it)."""
    for path in inputs:
        if same_file(path.parent, folder):
            raise DataError(f"{option} is the folder of the input {path}; the fused images would mix with the inputs: choose another folder")


@contextlib.contextmanager
def replaced_whole(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary name beside ``path`` to write the whole file under. It becomes ``path`` (one
    rename) when the block ends without an error and is deleted otherwise, so a crash, a kill
    or a full disk never leaves half a file at ``path``: the old file, or none, stays.

    The name is fresh rather than made by ``mkstemp``, whose files are owner-only: the file
    gets the umask's permissions, like every other output.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as exc:
        # A full disk or a missing permission: name the file the user asked for, not ours. An
        # error from write() itself (a full disk) names no file at all.
        if exc.filename is None or os.fspath(exc.filename) == os.fspath(temporary):
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
        raise
    finally:
        # Quietly: on a read-only file system unlink fails too, and its error would replace the one above.
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def write_text_whole(path: str | os.PathLike, text: str) -> None:
    """``text`` as the whole of ``path``, through ``replaced_whole``: the old file or the new one,
    never half; and a link at ``path`` (soft or hard) is replaced, not written through to the
    file it shares (a link planted in a run's out_dir made its summary overwrite a file elsewhere)."""
    with replaced_whole(path) as temporary:
        temporary.write_text(text)
