"""`ldfusion fuse` end to end, and parity with the authors' LD-Lite outputs."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from calibration_helpers import write_video

from ldfusion.cli.fuse import main as fuse_main
from ldfusion.color import merge_fused_y, rgb_to_y
from ldfusion.imageio import read_infrared, read_visible
from ldfusion.inference import Fuser, FuserOptions
from ldfusion.weights import resolve_model


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _make_pairs(root: Path, sizes, colour=True, ir_dtype=np.uint8) -> None:
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate(sizes):
        vi = rng.integers(0, 256, (h, w, 3) if colour else (h, w), dtype=np.uint8)
        top = 65535 if ir_dtype == np.uint16 else 255
        ir = rng.integers(0, top // 4, (h, w), dtype=ir_dtype)
        _write(root / "vi" / f"{k}.png", vi)
        _write(root / "ir" / f"{k}.png", ir)


def _run(root: Path, weights: Path, *extra: str) -> int:
    return fuse_main(["--ir", str(root / "ir"), "--vi", str(root / "vi"), "--out", str(root / "out"), "--weights", str(weights), "-q", *extra])


@pytest.mark.parametrize("colour", [True, False])
def test_fuse_writes_one_png_per_pair_with_the_input_size(tmp_path, random_weights, colour):
    sizes = [(48, 64), (48, 64), (48, 64), (30, 41)]  # mixed sizes are batched separately
    _make_pairs(tmp_path, sizes, colour=colour)
    assert _run(tmp_path, random_weights["ld-lite"], "--batch", "2", "--side-by-side") == 0
    for k, (h, w) in enumerate(sizes):
        out = cv2.imread(str(tmp_path / "out" / f"{k}.png"), cv2.IMREAD_UNCHANGED)
        assert out.shape == ((h, w, 3) if colour else (h, w))
        sbs = cv2.imread(str(tmp_path / "out" / f"{k}_sbs.png"), cv2.IMREAD_UNCHANGED)
        assert sbs.shape == (h, 3 * w, 3)


def test_batched_fuse_equals_one_at_a_time(tmp_path, random_weights):
    _make_pairs(tmp_path, [(40, 40)] * 3)
    assert _run(tmp_path, random_weights["ldfusion"], "--batch", "3") == 0
    batched = [cv2.imread(str(tmp_path / "out" / f"{k}.png")) for k in range(3)]
    assert _run(tmp_path, random_weights["ldfusion"], "--batch", "1", "--overwrite") == 0
    single = [cv2.imread(str(tmp_path / "out" / f"{k}.png")) for k in range(3)]
    for a, b in zip(batched, single):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_two_calls_in_flight_write_each_pair_its_own_fused_image(tmp_path, random_weights):
    """``fuse`` starts a batch's network call before taking the previous batch's result (two
    OpenVINO calls at once): every output still belongs to its own pair, across sizes."""
    pytest.importorskip("openvino")
    from ldfusion.cli.fuse import fuse_pairs
    from ldfusion.imageio import pair_folders

    sizes = [(48, 64), (48, 64), (30, 41), (48, 64), (30, 41), (30, 41), (48, 64)]
    _make_pairs(tmp_path, sizes)
    model = str(random_weights["ld-lite"])
    overlapping = Fuser.from_weights(model, options=FuserOptions(device="cpu", backend="openvino", precision="f32", cpu_streams=2))
    reference = Fuser.from_weights(model, options=FuserOptions(device="cpu", backend="torch"))
    assert overlapping.overlaps_calls
    pairs = pair_folders(tmp_path / "ir", tmp_path / "vi")
    (tmp_path / "out").mkdir()
    assert fuse_pairs(overlapping, pairs, tmp_path / "out", batch=2, progress=False) == len(sizes)
    for k in range(len(sizes)):
        expected = reference.fuse_arrays([read_visible(tmp_path / "vi" / f"{k}.png")], [read_infrared(tmp_path / "ir" / f"{k}.png")])[0]
        written = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / f"{k}.png")), cv2.COLOR_BGR2RGB)
        assert written.shape == expected.shape and np.abs(written.astype(int) - expected.astype(int)).max() <= 1, k


def test_16bit_infrared_is_stretched(tmp_path):
    raw = np.full((20, 20), 20000, np.uint16)
    raw[5:10, 5:10] = 21000  # a warm object in a narrow band of raw counts
    _write(tmp_path / "ir16.png", raw)
    ir = read_infrared(tmp_path / "ir16.png")
    assert ir.dtype == np.float32 and ir.min() == 0.0 and ir.max() == 1.0
    scaled = read_infrared(tmp_path / "ir16.png", "scale")
    assert scaled.max() == pytest.approx(21000 / 65535)


def test_unpaired_file_is_a_one_line_error(tmp_path, random_weights, capsys):
    _make_pairs(tmp_path, [(32, 32)] * 2)
    (tmp_path / "vi" / "1.png").unlink()
    assert _run(tmp_path, random_weights["ld-lite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "have no partner" in err and "1.png" in err


def test_size_mismatch_is_a_one_line_error_naming_the_pair(tmp_path, random_weights, capsys):
    _make_pairs(tmp_path, [(32, 32)])
    _write(tmp_path / "ir" / "0.png", np.zeros((32, 40), np.uint8))
    assert _run(tmp_path, random_weights["ld-lite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0: ir and vi differ in size: 40x32 vs 32x32" in err[0]


def test_a_video_given_for_an_image_says_so(tmp_path, random_weights, capsys):
    """A video where an image goes was 'cannot decode image (corrupt or unsupported format)'."""
    write_video(tmp_path / "ir.mp4", np.full((3, 48, 64), 0.5, np.float32), 10)
    write_video(tmp_path / "vi.mp4", np.full((3, 48, 64), 0.5, np.float32), 10)
    argv = ["--ir", str(tmp_path / "ir.mp4"), "--vi", str(tmp_path / "vi.mp4"), "--out", str(tmp_path / "out"), "--weights", str(random_weights["ld-lite"]), "-q"]
    assert fuse_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mp4 is a video; an image is needed here" in err[0], err


def test_corrupt_image_and_missing_folder_are_one_line_errors(tmp_path, random_weights, capsys):
    _make_pairs(tmp_path, [(32, 32)])
    (tmp_path / "vi" / "0.png").write_bytes(b"\x89PNG garbage")
    assert _run(tmp_path, random_weights["ld-lite"]) == 2
    assert "cannot decode image" in capsys.readouterr().err
    assert fuse_main(["--ir", str(tmp_path / "nope"), "--vi", str(tmp_path / "vi"), "--out", str(tmp_path / "o")]) == 2
    assert f"--ir {tmp_path / 'nope'}: no such file or folder" in capsys.readouterr().err


def test_a_missing_input_is_named_as_missing(tmp_path, random_weights, capsys):
    """It was "not a folder: nope", as if nope were there and of the wrong kind; an input that is
    there but of the wrong kind keeps the reader's message."""
    _make_pairs(tmp_path, [(32, 32)])
    nope, gone = tmp_path / "nope", tmp_path / "gone.png"
    gone.symlink_to(tmp_path / "deleted.png")
    cases = [
        (nope, tmp_path / "vi", f"--ir {nope}: no such file or folder"),
        (tmp_path / "ir", nope, f"--vi {nope}: no such file or folder"),
        (tmp_path / "ir" / "0.png", nope, f"--vi {nope}: no such file or folder"),  # was "... nope is not a file"
        (gone, tmp_path / "vi" / "0.png", f"--ir {gone}: a link to nothing"),
        (tmp_path / "ir" / "0.png", tmp_path / "vi", f"--ir and --vi must both be files or both be folders; {tmp_path / 'vi'} is not a file"),
    ]
    for ir, vi, expected in cases:
        assert fuse_main(["--ir", str(ir), "--vi", str(vi), "--out", str(tmp_path / "o"), "--weights", str(random_weights["ld-lite"])]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"ldfusion fuse: error: {expected}", err
    assert not (tmp_path / "o").exists()


def test_hidden_files_beside_the_images_are_no_images(tmp_path, random_weights):
    """A folder copied from a Mac holds ``._0.png`` resource forks beside the images."""
    _make_pairs(tmp_path, [(32, 32)])
    (tmp_path / "vi" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert _run(tmp_path, random_weights["ld-lite"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png"]


def test_a_truncated_jpeg_is_a_one_line_error_naming_it(tmp_path, random_weights, capsys):
    """libjpeg decodes a cut-off JPEG with its missing part flat grey (exit 0, a stray warning that
    names no file); the truncation is caught before decoding instead."""
    _make_pairs(tmp_path, [(64, 64)])
    texture = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", texture)
    (tmp_path / "vi" / "0.png").unlink()
    (tmp_path / "vi" / "0.jpg").write_bytes(encoded.tobytes()[: len(encoded) // 2])
    (tmp_path / "ir" / "0.png").rename(tmp_path / "ir" / "0.jpg")  # pairs go by name
    assert _run(tmp_path, random_weights["ld-lite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0.jpg is truncated" in err[0], err
    (tmp_path / "vi" / "0.jpg").write_bytes(encoded.tobytes())  # the whole file reads
    assert read_visible(tmp_path / "vi" / "0.jpg").shape == (64, 64, 3)
    # A Motion Photo: a whole JPEG with a video after it, whose bytes hold start-of-scan pairs
    # (0xFF 0xDA) and no end-of-image after the last one: read as the image it starts with.
    trailer = bytes([0xFF, 0xDA, 0x00, 0x0C]) + bytes(range(256)) * 8
    (tmp_path / "vi" / "0.jpg").write_bytes(encoded.tobytes() + trailer)
    assert np.array_equal(read_visible(tmp_path / "vi" / "0.jpg"), cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1])


@pytest.mark.parametrize("orientation, stored_turns", [(3, 2), (6, 1), (8, 3)])  # counterclockwise, as stored
def test_jpegs_stored_turned_are_read_upright_by_their_exif_orientation(tmp_path, orientation, stored_turns):
    """A phone JPEG stored turned with an EXIF orientation is read as viewers show it: it was fused
    turned (orientation 3: upside down, exit 0) or refused with sizes no viewer shows (6, 8)."""
    from PIL import Image

    ramp = np.add.outer(np.arange(40) * 2, np.arange(60) * 3)  # smooth: JPEG keeps it
    upright = np.dstack([ramp, ramp[::-1], 200 - ramp // 2]).clip(0, 255).astype(np.uint8)
    upright[:10, :10] = 255  # a marked corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = np.ascontiguousarray(np.rot90(upright, stored_turns))
    Image.fromarray(stored).save(tmp_path / "v.jpg", exif=exif.tobytes(), quality=98)
    read = read_visible(tmp_path / "v.jpg")
    assert read.shape == upright.shape
    assert read[:10, :10].mean() > 240 and np.abs(read.astype(int) - upright).mean() < 12


@pytest.mark.parametrize("entry", ["broken link", "folder"])
def test_an_image_name_that_is_no_file_is_a_one_line_error(tmp_path, random_weights, capsys, entry):
    """A link to nothing (or a folder named like an image) on both sides was skipped: its pair dropped, exit 0."""
    _make_pairs(tmp_path, [(32, 32)])
    for side in ("ir", "vi"):
        if entry == "broken link":
            (tmp_path / side / "1.png").symlink_to(tmp_path / "nowhere.png")
        else:
            (tmp_path / side / "1.png").mkdir()
    assert _run(tmp_path, random_weights["ld-lite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = "is a link to nothing" if entry == "broken link" else "is not a file"
    assert len(err) == 1 and f"1.png {expected}" in err[0], err
    assert not (tmp_path / "out").exists()


def test_missing_weights_file_is_a_one_line_error(tmp_path, capsys):
    _make_pairs(tmp_path, [(32, 32)])
    assert _run(tmp_path, tmp_path / "absent.pt") == 2
    assert "weights not found" in capsys.readouterr().err
    assert _run(tmp_path, "") == 2  # Path("") would be the current folder
    assert "weights: the name is empty" in capsys.readouterr().err


@pytest.mark.shared_data
def test_ld_lite_parity_with_the_authors_outputs(tmp_path, shared_data, ldlite_weights):
    pairs = shared_data / "pairs" / "ldlite_test"
    out = tmp_path / "out"
    code = fuse_main(["--ir", str(pairs / "ir"), "--vi", str(pairs / "vi"), "--out", str(out), "--weights", str(ldlite_weights), "--model", "ld-lite", "--device", "cpu", "-q"])
    assert code == 0
    names = sorted(p.name for p in (pairs / "reference_fused").iterdir())
    assert names
    for name in names:
        ours = cv2.imread(str(out / name), cv2.IMREAD_COLOR).astype(int)
        reference = cv2.imread(str(pairs / "reference_fused" / name), cv2.IMREAD_COLOR).astype(int)
        assert ours.shape == reference.shape
        assert np.abs(ours - reference).max() <= 1, name


@pytest.mark.shared_data
def test_ld_lite_truncated_output_is_bit_exact_on_almost_every_pixel(shared_data, ldlite_weights):
    """The authors truncate to uint8 where we round; truncating ours reproduces theirs."""
    pairs = shared_data / "pairs" / "ldlite_test"
    fuser = Fuser(resolve_model(str(ldlite_weights)), FuserOptions(device="cpu"))
    for name in sorted(p.name for p in (pairs / "reference_fused").iterdir()):
        visible = read_visible(pairs / "vi" / name)
        rgb = np.repeat(visible[:, :, None], 3, 2) if visible.ndim == 2 else visible
        vi = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        ir = torch.from_numpy(read_infrared(pairs / "ir" / name))[None, None]
        fused = merge_fused_y(fuser.fuse_y(rgb_to_y(vi), ir), vi)
        truncated = (fused[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        reference = cv2.cvtColor(cv2.imread(str(pairs / "reference_fused" / name)), cv2.COLOR_BGR2RGB)
        exact = np.mean(truncated == reference)
        # The rest sit on a truncation boundary, where GPU and CPU convolutions round apart.
        assert exact > 0.98, f"{name}: only {exact:.4%} of values identical"
        assert np.abs(truncated.astype(int) - reference).max() <= 1


def test_a_truncated_image_gives_only_the_one_line_error(tmp_path, random_weights, capfd):
    """OpenCV printed its own "[ WARN:0@1.1] global grfmt_png.cpp ... buffer is incomplete"
    (a PNG cut in its header) or libpng "libpng error: PNG input buffer is incomplete" (cut in
    its image data) to stderr before the one-line error, even with -q."""
    _make_pairs(tmp_path, [(32, 32)])
    whole = (tmp_path / "vi" / "0.png").read_bytes()
    for cut in (60, len(whole) // 2, len(whole) - 4):  # in the header, in the image data, in IEND's CRC
        (tmp_path / "vi" / "0.png").write_bytes(whole[:cut])
        assert _run(tmp_path, random_weights["ld-lite"]) == 2  # -q
        lines = capfd.readouterr().err.strip().splitlines()
        assert lines == [f"ldfusion fuse: error: {tmp_path / 'vi' / '0.png'} is truncated: its PNG data ends before the image does"], lines


def test_entries_of_a_folder_that_are_not_images_are_named_in_the_log(tmp_path, caplog):
    """Nested folders and other files were left out with no word: "fusing 1 pair(s)"."""
    from ldfusion.imageio import list_images

    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.png").write_bytes(b"")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4), np.uint8))
    with caplog.at_level(logging.INFO, logger="ldfusion.imageio"):
        assert list(list_images(tmp_path)) == ["a"]
    assert f"{tmp_path}: skipped 2 entries that are no image (subfolders are not read): notes.txt, sub/" in caplog.text
