"""Files are replaced whole or not at all (``ldfusion.paths.replaced_whole``), images included."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from ldfusion.imageio import write_image
from ldfusion.errors import DataError
from ldfusion.paths import file_key, refuse_overwriting_inputs, replaced_whole


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_finished_block_replaces_the_file_with_the_umasks_permissions(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    previous = os.umask(0o027)
    try:
        with replaced_whole(target) as temporary:
            assert temporary.parent == tmp_path and temporary != target
            temporary.write_bytes(b"new")
            assert target.read_bytes() == b"old"  # nothing reaches the file before the block ends
    finally:
        os.umask(previous)
    assert target.read_bytes() == b"new" and leftovers(tmp_path) == []
    assert target.stat().st_mode & 0o777 == 0o640  # not mkstemp's owner-only 0o600


def test_a_failed_block_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(OSError):
        with replaced_whole(target) as temporary:
            temporary.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", str(temporary))
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []
    with pytest.raises(RuntimeError):
        with replaced_whole(tmp_path / "new.bin") as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("killed half-way")
    assert not (tmp_path / "new.bin").exists() and leftovers(tmp_path) == []


def test_an_image_write_that_fails_half_way_leaves_the_previous_image_whole(tmp_path, monkeypatch):
    """cv2.imwrite left a cut PNG on a full disk (and printed libpng's error); now the write
    is Python's, whole or not at all, and its error names the file."""
    target = tmp_path / "000001.png"
    first = np.full((24, 32, 3), 200, np.uint8)
    write_image(target, first)
    assert cv2.imread(str(target))[0, 0].tolist() == [200, 200, 200]

    def disk_fills_half_way(self: Path, data: bytes) -> int:
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", disk_fills_half_way)
    with pytest.raises(OSError, match="No space left on device") as failed:
        write_image(target, np.zeros((24, 32, 3), np.uint8))
    assert failed.value.filename == str(target)  # the file asked for, not the temporary name
    monkeypatch.undo()
    assert cv2.imread(str(target))[0, 0].tolist() == [200, 200, 200] and leftovers(tmp_path) == []


def test_a_full_disk_or_read_only_folder_names_the_file_asked_for(tmp_path, monkeypatch):
    """write() on a full disk raises ENOSPC naming no file, and on a read-only file system the
    cleanup's unlink fails too: the error must still be one naming the image, not ours or none."""
    target = tmp_path / "a.png"

    def full_disk(self: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")  # what a failing write() gives: no filename

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match="No space left on device") as failed:
        write_image(target, np.zeros((8, 8, 3), np.uint8))
    assert failed.value.filename == str(target)

    def read_only(self: Path, data: bytes) -> int:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    def unlink_fails(self: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_bytes", read_only)
    monkeypatch.setattr(Path, "unlink", unlink_fails)
    with pytest.raises(OSError, match="Read-only file system") as failed:
        write_image(target, np.zeros((8, 8, 3), np.uint8))
    assert failed.value.filename == str(target)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_images_are_the_bytes_opencv_writes(tmp_path, suffix):
    image = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    write_image(tmp_path / f"ours{suffix}", image)
    cv2.imwrite(str(tmp_path / f"theirs{suffix}"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert (tmp_path / f"ours{suffix}").read_bytes() == (tmp_path / f"theirs{suffix}").read_bytes()


def test_a_path_through_a_folder_not_yet_made_is_the_file_it_will_reach(tmp_path, monkeypatch):
    """`--out sub/../g.csv` with no sub/ was taken for a new file: the command made sub/ and
    overwrote its input g.csv."""
    monkeypatch.chdir(tmp_path)
    Path("g.csv").write_text("points\n")
    assert file_key("missing/../g.csv") == file_key("g.csv")
    assert file_key("missing/../other.csv") == file_key(tmp_path / "other.csv")
    with pytest.raises(DataError, match="would overwrite the input"):
        refuse_overwriting_inputs([Path("missing/../g.csv")], [Path("g.csv")], "--out")
