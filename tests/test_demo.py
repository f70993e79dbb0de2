"""`ldfusion demo`, the README's main job: a playable MP4 without any shared data."""

from __future__ import annotations

import cv2
import numpy as np

from ldfusion.color import planes_to_image
from ldfusion.video import VideoReader, VideoWriter
from ldfusion.weights import BUNDLED_DIR
from pipeline.demo import main as demo_main
from pipeline.demo import write_preview


def _frames(path) -> list:
    with VideoReader(path) as reader:
        return [planes_to_image(frame.planes) for frame in reader]


def test_demo_on_a_rendered_clip_writes_playable_mp4s_and_a_preview(tmp_path, random_weights):
    out = tmp_path / "demo"
    code = demo_main(["--source", "synthetic", "--out", str(out), "--weights", str(random_weights["ld-lite"]), "--max-frames", "6", "-q"])
    assert code == 0
    fused, sbs = _frames(out / "fused.mp4"), _frames(out / "side_by_side.mp4")
    assert len(fused) == len(sbs) == 6
    height, width = fused[0].shape[:2]
    assert (height, width) == (240, 320)
    assert sbs[0].shape[:2] == (height, 3 * width)
    assert cv2.imread(str(out / "preview.png")).shape == (height, 3 * width, 3)
    # Run again, it replaces its own files (the pipeline refuses existing outputs unless told).
    code = demo_main(["--source", "synthetic", "--out", str(out), "--weights", str(random_weights["ld-lite"]), "--max-frames", "4", "-q"])
    assert code == 0 and len(_frames(out / "fused.mp4")) == 4


def test_the_preview_is_the_middle_frame(tmp_path):
    video = tmp_path / "clip.mp4"
    with VideoWriter(video, 30) as writer:
        for index in range(9):  # frame i is grey level 20 * i + 10
            writer.write_image(np.full((32, 48, 3), 20 * index + 10, np.uint8))
    preview = cv2.imread(str(write_preview(video, tmp_path / "preview.png", frames=9)))
    assert preview.shape == (32, 48, 3)
    assert abs(float(preview.mean()) - (20 * 4 + 10)) < 3  # frame 4 of 0..8


def test_the_default_weights_ship_inside_the_package():
    assert (BUNDLED_DIR / "default.pt").is_file()


def test_missing_m3svd_folder_is_a_one_line_error(tmp_path, capsys):
    assert demo_main(["--source", "m3svd", "--m3svd", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no infrared/0111_1716.mp4" in capsys.readouterr().err


def test_max_frames_below_one_is_a_one_line_error_naming_the_option(tmp_path, capsys):
    assert demo_main(["--source", "synthetic", "--max-frames", "0", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "ldfusion demo: error: --max-frames must be at least 1; got 0"
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_files_of_the_demos_names_that_no_demo_wrote_are_replaced_only_with_overwrite(tmp_path, capsys, random_weights):
    """`demo --out myproject` replaced the user's preview.png, config.yaml and summary.json with no word."""
    out = tmp_path / "myproject"
    out.mkdir()
    (out / "config.yaml").write_text("mine: true\n")
    (out / "preview.png").write_bytes(b"my picture")
    args = ["--source", "synthetic", "--out", str(out), "--weights", str(random_weights["ld-lite"]), "--max-frames", "2", "-q"]
    assert demo_main(args) == 2
    assert capsys.readouterr().err.strip() == (f"ldfusion demo: error: --out {out} holds preview.png, config.yaml, not from an "
                                               "earlier demo; pass --overwrite to replace them, or choose another --out")
    assert (out / "config.yaml").read_text() == "mine: true\n" and sorted(p.name for p in out.iterdir()) == ["config.yaml", "preview.png"]
    assert demo_main([*args, "--overwrite"]) == 0
    assert len(_frames(out / "fused.mp4")) == 2 and (out / "preview.png").read_bytes() != b"my picture"


def test_a_link_where_a_demo_output_goes_is_named_in_one_line(tmp_path, capsys, random_weights):
    """A link at fused.mp4 pointing out of --out: "error: ValueError: sink path ... leaves run.out_dir", exit 1."""
    out = tmp_path / "demo"
    out.mkdir()
    (tmp_path / "victim.txt").write_text("precious")
    (out / "fused.mp4").symlink_to(tmp_path / "victim.txt")
    args = ["--source", "synthetic", "--out", str(out), "--weights", str(random_weights["ld-lite"]), "--max-frames", "2", "-q", "--overwrite"]
    assert demo_main(args) == 2
    assert capsys.readouterr().err.strip() == f"ldfusion demo: error: --out {out}: fused.mp4 is a link, where the demo writes a file; move it away, or choose another --out"
    assert demo_main(args[:-1]) == 2  # without --overwrite: the same line, not "pass --overwrite"
    assert "fused.mp4 is a link" in capsys.readouterr().err
    assert (tmp_path / "victim.txt").read_text() == "precious"
