"""Bad input ends in one line on stderr and a non-zero exit, never a traceback or a silent wrong result.

One section per class of issue 12: image folders paired by name, outputs kept apart from
inputs and inside out_dir, finite numbers, off-screen registrations, non-finite weights and
outputs, crafted checkpoints, everyday CLI mistakes, malformed ZeroMQ messages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zmq

from calibration.fileformat import CalibrationError, Registration, load_registration, save_registration
from ldfusion.checkpoint import FORMAT_NAME, FORMAT_VERSION, load_checkpoint, load_model, save_checkpoint
from ldfusion.cli import fuse as fuse_cli
from ldfusion_cli import main as dispatcher
from ldfusion.errors import CheckpointError, DataError
from ldfusion.imageio import write_image
from ldfusion.inference import Fuser, FuserOptions
from ldfusion.networks import build_network
from ldfusion.variants import get_variant
from pipeline import cli as run_cli
from pipeline import subscriber as subscriber_cli
from pipeline.config import SourceConfig
from pipeline.frames import VISIBLE
from pipeline.registration import check_overlap, plan_from_calibration
from pipeline.sources import LiveCameraSource, camera_planes
from pipeline.subscriber import Subscriber, decode_message
from tests.pipeline_helpers import marked_frame, marked_video

REPO_ROOT = Path(__file__).resolve().parents[1]


def one_error_line(capsys, prog: str) -> str:
    """The single stderr line of a failed command (no traceback)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: "), err
    return err[0]


def write_config(tmp_path: Path, data: dict, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def video_config(tmp_path: Path, sinks: list[dict] | None = None, **run) -> dict:
    ir = marked_video(tmp_path / "ir.mp4", 6, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 6, 30, seed=2)
    return {
        "streams": [{"id": "cam0", "ir": {"path": str(ir)}, "visible": {"path": str(vi)}}],
        "sinks": sinks if sinks is not None else [{"kind": "mp4", "path": "o.mp4"}],
        "model": {"device": "cpu"},
        "run": {"out_dir": str(tmp_path / "out"), "progress": False, **run},
    }


def run_command(config: Path, *flags: str, weights: Path) -> int:
    return run_cli.main([str(config), "--weights", str(weights), "-q", *flags])


# --- 1. image folders in `run` pair by name -------------------------------------------------


def image_folders(tmp_path: Path, ir_names: list[str], vi_names: list[str]) -> tuple[Path, Path]:
    ir_dir, vi_dir = tmp_path / "ir", tmp_path / "vi"
    ir_dir.mkdir()
    vi_dir.mkdir()
    for i, name in enumerate(ir_names):
        write_image(ir_dir / f"{name}.png", marked_frame(i, 32, 24, seed=1)[:, :, 0])
    for i, name in enumerate(vi_names):
        write_image(vi_dir / f"{name}.jpg", marked_frame(i, 32, 24, seed=2))
    return ir_dir, vi_dir


def images_config(ir_dir: Path, vi_dir: Path, tmp_path: Path, vi_fps: float = 10) -> dict:
    return {
        "streams": [{"id": "cam0", "ir": {"kind": "images", "path": str(ir_dir), "fps": 10},
                     "visible": {"kind": "images", "path": str(vi_dir), "fps": vi_fps}}],
        "sinks": [{"kind": "png", "path": "png"}],
        "run": {"out_dir": str(tmp_path / "out"), "progress": False},
    }


def test_an_image_of_another_size_mid_folder_is_named(tmp_path, capsys, random_weights):
    """"infrared frames are 16x12 but the stream started with 32x24" named no file of the folder."""
    ir_dir, vi_dir = image_folders(tmp_path, ["1", "2", "3"], ["1", "2", "3"])
    write_image(ir_dir / "2.png", marked_frame(1, 16, 12, seed=1)[:, :, 0])
    assert run_command(write_config(tmp_path, images_config(ir_dir, vi_dir, tmp_path)), weights=random_weights["ld-lite"]) == 2
    assert (f"infrared frames are 16x12 but the stream started with 32x24 (at {ir_dir / '2.png'} and {vi_dir / '2.jpg'})"
            in one_error_line(capsys, "ldfusion run"))


def test_run_refuses_image_folders_whose_names_do_not_pair(tmp_path, capsys, random_weights):
    names = [str(i) for i in range(6)]
    ir_dir, vi_dir = image_folders(tmp_path, [n for n in names if n != "2"], names)  # IR 2 is missing
    config = write_config(tmp_path, images_config(ir_dir, vi_dir, tmp_path))
    assert run_command(config, weights=random_weights["ld-lite"]) == 2
    line = one_error_line(capsys, "ldfusion run")
    assert "have no partner" in line and "2.jpg" in line
    assert not (tmp_path / "out" / "png").exists()  # nothing written, rather than pairs shifted by one


@pytest.mark.parametrize("link", ["soft", "hard"])
def test_an_infrared_image_that_is_a_link_to_its_visible_partner_is_refused(tmp_path, capsys, random_weights, link):
    """Within two folders, ir/a.png a link to vi/a.png: that pair was fused with itself, exit 0."""
    ir_dir, vi_dir = image_folders(tmp_path, ["1", "2"], ["1", "2"])
    (ir_dir / "2.png").unlink()
    (ir_dir / "2.jpg").symlink_to(vi_dir / "2.jpg") if link == "soft" else (ir_dir / "2.jpg").hardlink_to(vi_dir / "2.jpg")
    argv = ["--ir", str(ir_dir), "--vi", str(vi_dir), "--out", str(tmp_path / "fused"), "--weights", str(random_weights["ld-lite"]), "-q"]
    assert fuse_cli.main(argv) == 2
    assert f"the infrared image {ir_dir / '2.jpg'} is the same file as its visible partner {vi_dir / '2.jpg'}" in one_error_line(capsys, "ldfusion fuse")


def test_run_refuses_two_image_folders_at_different_rates(tmp_path, capsys, random_weights):
    ir_dir, vi_dir = image_folders(tmp_path, ["1", "2"], ["1", "2"])
    config = write_config(tmp_path, images_config(ir_dir, vi_dir, tmp_path, vi_fps=20))
    assert run_command(config, weights=random_weights["ld-lite"]) == 2
    assert "need one fps" in one_error_line(capsys, "ldfusion run")


def test_one_file_or_folder_given_for_both_cameras_is_refused(tmp_path, capsys, random_weights):
    """Every frame fused with itself, written with exit 0: a slip in a path, not a rig."""
    ir_dir, _ = image_folders(tmp_path, ["1"], ["1"])
    argv = ["--ir", str(ir_dir), "--vi", f"{ir_dir}/.", "--out", str(tmp_path / "fused"), "--weights", str(random_weights["ld-lite"]), "-q"]
    assert fuse_cli.main(argv) == 2
    assert "the infrared and visible images are the same folder" in one_error_line(capsys, "ldfusion fuse")
    data = video_config(tmp_path)
    data["streams"][0]["visible"]["path"] = data["streams"][0]["ir"]["path"]
    assert run_command(write_config(tmp_path, data), weights=random_weights["ld-lite"]) == 2
    assert "stream cam0: ir and visible read the same video" in one_error_line(capsys, "ldfusion run")
    data["streams"][0] = {"id": "cam0", "ir": {"kind": "camera", "path": "0"}, "visible": {"kind": "camera", "path": "0"}}
    data["run"]["mode"] = "live"
    assert run_command(write_config(tmp_path, data), weights=random_weights["ld-lite"]) == 2
    assert "ir and visible read the same camera, 0" in one_error_line(capsys, "ldfusion run")
    assert not (tmp_path / "fused").exists() and not (tmp_path / "out").exists()


def test_run_pairs_image_folders_with_matching_names(tmp_path, random_weights):
    ir_dir, vi_dir = image_folders(tmp_path, ["1", "2", "10"], ["1", "2", "10"])
    config = write_config(tmp_path, images_config(ir_dir, vi_dir, tmp_path))
    assert run_command(config, weights=random_weights["ld-lite"]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "png").iterdir()) == ["000000.png", "000001.png", "000002.png"]


# --- 2. outputs apart from inputs, inside out_dir, not overwritten by surprise --------------


def test_a_sink_that_would_overwrite_an_input_is_refused_and_the_input_survives(tmp_path, capsys, random_weights):
    data = video_config(tmp_path, sinks=[{"kind": "mp4", "path": "vi.mp4"}])
    data["run"]["out_dir"] = str(tmp_path)  # the sink path is now the visible input itself
    before = (tmp_path / "vi.mp4").read_bytes()
    assert run_command(write_config(tmp_path, data), "--overwrite", weights=random_weights["ld-lite"]) == 2
    assert "would overwrite the input" in one_error_line(capsys, "ldfusion run")
    assert (tmp_path / "vi.mp4").read_bytes() == before


def test_a_sink_onto_a_hard_link_to_an_input_is_refused_and_the_input_survives(tmp_path, capsys, random_weights):
    data = video_config(tmp_path, sinks=[{"kind": "mp4", "path": "fused.mp4"}])
    out = Path(data["run"]["out_dir"])
    out.mkdir(parents=True)
    os.link(tmp_path / "vi.mp4", out / "fused.mp4")  # another name for the visible input
    before = (tmp_path / "vi.mp4").read_bytes()
    assert run_command(write_config(tmp_path, data), "--overwrite", weights=random_weights["ld-lite"]) == 2
    assert "would overwrite the input" in one_error_line(capsys, "ldfusion run")
    assert (tmp_path / "vi.mp4").read_bytes() == before


def test_a_png_sink_onto_an_input_image_folder_is_refused(tmp_path, capsys, random_weights):
    ir_dir, vi_dir = image_folders(tmp_path, ["1"], ["1"])
    data = images_config(ir_dir, vi_dir, tmp_path)
    data["sinks"] = [{"kind": "png", "path": str(ir_dir.name)}]
    data["run"]["out_dir"] = str(tmp_path)
    assert run_command(write_config(tmp_path, data), weights=random_weights["ld-lite"]) == 2
    assert "would overwrite the input" in one_error_line(capsys, "ldfusion run")


def test_existing_outputs_need_overwrite(tmp_path, capsys, random_weights):
    config = write_config(tmp_path, video_config(tmp_path))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "o.mp4").write_bytes(b"an earlier result")
    assert run_command(config, weights=random_weights["ld-lite"]) == 2
    assert "--overwrite" in one_error_line(capsys, "ldfusion run")
    assert (tmp_path / "out" / "o.mp4").read_bytes() == b"an earlier result"
    assert run_command(config, "--overwrite", weights=random_weights["ld-lite"]) == 0
    assert (tmp_path / "out" / "o.mp4").stat().st_size > 1000


@pytest.mark.parametrize("name, flags", [("config.yaml", ()), ("summary.json", ("--overwrite",))])
def test_a_run_never_writes_over_its_own_config_file(tmp_path, capsys, random_weights, name, flags):
    """A config.yaml saved by an earlier run, run again from its out_dir, is the config: rewriting
    it (or a config named summary.json) would lose the user's file, --overwrite or not."""
    out = tmp_path / "out"
    out.mkdir()
    config = write_config(out, video_config(tmp_path), name=name)
    before = config.read_text()
    assert run_command(config, *flags, weights=random_weights["ld-lite"]) == 2
    assert f"would write '{config}', which is its own config file" in one_error_line(capsys, "ldfusion run")
    assert config.read_text() == before and not (out / "o.mp4").exists()
    assert run_command(config, "--out", str(tmp_path / "elsewhere"), *flags, weights=random_weights["ld-lite"]) == 0
    assert config.read_text() == before and (tmp_path / "elsewhere" / "o.mp4").stat().st_size > 1000


def test_errors_about_outputs_name_the_folder_out_gives(tmp_path, capsys, random_weights):
    """--out replaces run.out_dir before the config is checked: a sink leaving it names --out's folder."""
    config = write_config(tmp_path, video_config(tmp_path, sinks=[{"kind": "mp4", "path": "../escape.mp4"}]))
    assert run_command(config, "--out", str(tmp_path / "given"), weights=random_weights["ld-lite"]) == 2
    line = one_error_line(capsys, "ldfusion run")
    assert f"leaves run.out_dir '{tmp_path / 'given'}'" in line and str(tmp_path / "out") not in line


@pytest.mark.parametrize(
    "sink_path, stream_id, expected",
    [
        ("../escape.mp4", "cam0", "leaves run.out_dir"),
        ("{stream}/../../escape.mp4", "cam0", "leaves run.out_dir"),
        ("{stream}.mp4", "..", "stream id must start with a letter or digit"),
        ("/tmp/ldfusion-absolute.mp4", "cam0", "is absolute"),
    ],
)
def test_sink_paths_stay_inside_out_dir(tmp_path, capsys, random_weights, sink_path, stream_id, expected):
    data = video_config(tmp_path, sinks=[{"kind": "mp4", "path": sink_path}])
    data["streams"][0]["id"] = stream_id
    assert run_command(write_config(tmp_path, data), weights=random_weights["ld-lite"]) == 2
    assert expected in one_error_line(capsys, "ldfusion run")
    assert not (tmp_path / "escape.mp4").exists()


@pytest.mark.parametrize("path, field", [("{strem}.mp4", "{strem}"), ("frames/{id}", "{id}"), ("{stream.mp4", "a brace"),
                                         ("{{stream}}.mp4", "{}")])
def test_a_misspelt_placeholder_in_a_sink_path_is_refused(tmp_path, capsys, random_weights, path, field):
    """With one stream, {strem}.mp4 was written as a file of that very name, exit 0 ({{stream}}: {cam0}.mp4)."""
    sink = {"kind": "png" if "frames" in path else "mp4", "path": path}
    assert run_command(write_config(tmp_path, video_config(tmp_path, sinks=[sink])), weights=random_weights["ld-lite"]) == 2
    assert f"holds {field}; the one placeholder a path may hold is {{stream}}" in one_error_line(capsys, "ldfusion run")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("link", ["symbolic", "hard"])
@pytest.mark.parametrize("artefact", ["summary.json", "config.yaml"])
def test_run_artefacts_replace_links_in_out_dir_instead_of_writing_through_them(tmp_path, random_weights, artefact, link):
    """A link planted in out_dir: the run wrote its summary or config through it, to a file outside.
    (What it points to is no run's: the run refuses it unless told to overwrite, and then replaces the link.)"""
    (tmp_path / "out").mkdir()
    victim = tmp_path / "elsewhere.txt"
    victim.write_text("keep me")
    planted = tmp_path / "out" / artefact
    planted.symlink_to(victim) if link == "symbolic" else os.link(victim, planted)
    assert run_command(write_config(tmp_path, video_config(tmp_path)), "--overwrite", weights=random_weights["ld-lite"]) == 0
    assert victim.read_text() == "keep me"
    assert not planted.is_symlink() and planted.stat().st_ino != victim.stat().st_ino and planted.stat().st_size > 10


@pytest.mark.parametrize("artefact, content", [("config.yaml", "my notes\n"), ("summary.json", '{"mine": 1}\n')])
def test_a_file_of_an_artefacts_name_that_no_run_saved_needs_overwrite(tmp_path, capsys, random_weights, artefact, content):
    """`run --out DIR` replaced the user's config.yaml or summary.json without a word (an earlier
    run's are replaced, as they always were)."""
    config = write_config(tmp_path, video_config(tmp_path))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / artefact).write_text(content)
    assert run_command(config, weights=random_weights["ld-lite"]) == 2
    assert f"{str(tmp_path / 'out' / artefact)!r} exists and is not what a run saves there; pass --overwrite" in one_error_line(capsys, "ldfusion run")
    assert (tmp_path / "out" / artefact).read_text() == content
    assert run_command(config, "--overwrite", weights=random_weights["ld-lite"]) == 0
    (tmp_path / "out" / "o.mp4").unlink()
    assert run_command(config, weights=random_weights["ld-lite"]) == 0  # the run's own artefacts are replaced


@pytest.mark.parametrize("place, expected", [
    ("link", "the mp4 sink writes the file"), ("dangling", "the mp4 sink writes the file"), ("summary.json", "the run saves summary.json"),
])
def test_a_link_or_folder_where_the_run_writes_is_refused_before_the_run(tmp_path, capsys, random_weights, place, expected):
    """A link at o.mp4 to another file of out_dir was written through (a dangling one made its
    target); a folder at summary.json failed only after every frame was fused."""
    out = tmp_path / "out"
    out.mkdir()
    if place == "summary.json":
        (out / "summary.json" / "x").mkdir(parents=True)
    else:
        (out / "other.mp4").write_text("keep")
        (out / "o.mp4").symlink_to("other.mp4" if place == "link" else "nowhere.mp4")
    assert run_command(write_config(tmp_path, video_config(tmp_path)), "--overwrite", weights=random_weights["ld-lite"]) == 2
    assert expected in one_error_line(capsys, "ldfusion run")
    assert not (out / "nowhere.mp4").exists() and (place == "summary.json" or (out / "other.mp4").read_text() == "keep")


def test_an_empty_out_dir_is_refused(tmp_path, capsys, random_weights):
    """``out_dir: ''`` was the current folder (Path("") is "."), written to without a word."""
    assert run_command(write_config(tmp_path, video_config(tmp_path, out_dir="")), weights=random_weights["ld-lite"]) == 2
    assert "run.out_dir is empty" in one_error_line(capsys, "ldfusion run")


@pytest.mark.parametrize("calibration", ["", "  "])
def test_an_empty_calibration_path_is_refused(tmp_path, capsys, random_weights, calibration):
    """``calibration: ""`` (a template's unset variable) ran with no registration, exit 0."""
    config = video_config(tmp_path)
    config["streams"][0]["registration"] = {"calibration": calibration}
    assert run_command(write_config(tmp_path, config), weights=random_weights["ld-lite"]) == 2
    assert "calibration is empty; name a calibration file (or leave the key out for none)" in one_error_line(capsys, "ldfusion run")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sinks", [[], None])
def test_a_run_with_no_sinks_is_refused(tmp_path, capsys, random_weights, sinks):
    """No sinks (or the key left out): every frame fused and dropped, exit 0, and the table's
    "written" column counted them."""
    config = video_config(tmp_path)
    config["sinks"] = sinks
    if sinks is None:
        del config["sinks"]
    assert run_command(write_config(tmp_path, config), weights=random_weights["ld-lite"]) == 2
    assert "the config has no sinks: the fused frames would go nowhere" in one_error_line(capsys, "ldfusion run")


def test_an_absolute_sink_path_is_allowed_when_the_config_says_so(tmp_path, random_weights):
    target = tmp_path / "elsewhere" / "abs.mp4"
    data = video_config(tmp_path, sinks=[{"kind": "mp4", "path": str(target)}], allow_absolute_paths=True)
    assert run_command(write_config(tmp_path, data), weights=random_weights["ld-lite"]) == 0
    assert target.stat().st_size > 1000


def fuse_args(ir_dir: Path, vi_dir: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return ["--ir", str(ir_dir), "--vi", str(vi_dir), "--out", str(out), "--weights", str(weights), "--device", "cpu", "-q", *extra]


@pytest.mark.parametrize("into", ["ir", "vi"])
def test_fuse_into_an_input_folder_is_refused_and_the_inputs_survive(tmp_path, capsys, random_weights, into):
    """Into the visible folder of JPEGs no name clashed: a.png was written beside a.jpg, and the
    next run over that folder refused it (two images named a)."""
    ir_dir, vi_dir = image_folders(tmp_path, ["1", "2"], ["1", "2"])
    out = ir_dir if into == "ir" else vi_dir
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    assert fuse_cli.main(fuse_args(ir_dir, vi_dir, out, random_weights["ld-lite"], "--overwrite")) == 2
    assert f"--out {out} is the folder of the input" in one_error_line(capsys, "ldfusion fuse")
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_fuse_into_an_input_folder_through_a_folder_not_yet_made_is_refused(tmp_path, capsys, random_weights):
    """--out missing/../vi wrote a.png beside the visible a.jpg, exit 0, and made missing/."""
    ir_dir, vi_dir = image_folders(tmp_path, ["1"], ["1"])
    out = tmp_path / "missing" / ".." / "vi"
    assert fuse_cli.main(fuse_args(ir_dir, vi_dir, out, random_weights["ld-lite"])) == 2
    assert f"--out {out} is the folder of the input" in one_error_line(capsys, "ldfusion fuse")
    assert sorted(p.name for p in vi_dir.iterdir()) == ["1.jpg"] and not (tmp_path / "missing").exists()


def test_fuse_refuses_an_output_that_is_a_hard_link_to_an_input(tmp_path, capsys, random_weights):
    """Another name for an input file is still the input: its bytes would change."""
    ir_dir, vi_dir = image_folders(tmp_path, ["1"], ["1"])
    out = tmp_path / "out"
    out.mkdir()
    os.link(ir_dir / "1.png", out / "1.png")  # the fused image's name
    before = (ir_dir / "1.png").read_bytes()
    assert fuse_cli.main(fuse_args(ir_dir, vi_dir, out, random_weights["ld-lite"], "--overwrite")) == 2
    assert "would overwrite the input" in one_error_line(capsys, "ldfusion fuse")
    assert (ir_dir / "1.png").read_bytes() == before


def test_fuse_out_named_like_an_image_is_refused(tmp_path, capsys, random_weights):
    """`--out fused.png` for one pair made a folder fused.png holding the image."""
    ir_dir, vi_dir = image_folders(tmp_path, ["1"], ["1"])
    out = tmp_path / "fused.png"
    assert fuse_cli.main(fuse_args(ir_dir / "1.png", vi_dir / "1.jpg", out, random_weights["ld-lite"])) == 2
    assert f"--out {out} names an image file; --out is a folder" in one_error_line(capsys, "ldfusion fuse")
    assert not out.exists()


def test_fuse_refuses_a_folder_in_a_fused_images_place_before_writing_any(tmp_path, capsys, random_weights):
    """The folder was found when its pair's turn came, the images before it written, and the
    error said to give an image file name, which fuse chooses, not the user."""
    ir_dir, vi_dir = image_folders(tmp_path, ["1", "2"], ["1", "2"])
    out = tmp_path / "out"
    (out / "2.png").mkdir(parents=True)
    assert fuse_cli.main(fuse_args(ir_dir, vi_dir, out, random_weights["ld-lite"], "--overwrite")) == 2
    assert f"{out / '2.png'} is a folder where a fused image goes" in one_error_line(capsys, "ldfusion fuse")
    assert sorted(p.name for p in out.iterdir()) == ["2.png"]


def test_fuse_refuses_two_pairs_that_would_write_one_file(tmp_path, capsys, random_weights):
    """With --side-by-side, pair a writes a_sbs.png, the name of pair a_sbs's fused image: one would be lost."""
    ir_dir, vi_dir = image_folders(tmp_path, ["a", "a_sbs"], ["a", "a_sbs"])
    out = tmp_path / "out"
    assert fuse_cli.main(fuse_args(ir_dir, vi_dir, out, random_weights["ld-lite"], "--side-by-side")) == 2
    assert "pairs 'a' and 'a_sbs' would both write a_sbs.png" in one_error_line(capsys, "ldfusion fuse")
    assert not out.exists()
    assert fuse_cli.main(fuse_args(ir_dir, vi_dir, out, random_weights["ld-lite"])) == 0  # without it the names differ
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_sbs.png"]


def test_eval_save_fused_refuses_existing_images_and_folders_in_their_place_as_fuse_does(tmp_path, capsys, random_weights):
    """--save-fused replaced a user's 1.png without a word; a folder in a fused image's place was
    found after the first image and the metrics rows were written."""
    from ldfusion.cli import evaluate

    ir_dir, vi_dir = image_folders(tmp_path, ["1", "2"], ["1", "2"])
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "1.png").write_bytes(b"my photo")
    args = ["--ir", str(ir_dir), "--vi", str(vi_dir), "--fuse-with", str(random_weights["ld-lite"]), "--device", "cpu",
            "--save-fused", str(keep), "--out", str(tmp_path / "scores"), "-q"]
    assert evaluate.main(args) == 2
    assert f"--save-fused {keep} already holds 1 of the fused images (first: 1.png); pass --overwrite" in one_error_line(capsys, "ldfusion eval")
    (keep / "2.png").mkdir()
    assert evaluate.main([*args, "--overwrite"]) == 2
    assert f"{keep / '2.png'} is a folder where a fused image goes" in one_error_line(capsys, "ldfusion eval")
    assert (keep / "1.png").read_bytes() == b"my photo" and not (tmp_path / "scores").exists()


def test_eval_refuses_a_folder_where_a_metrics_file_goes_before_deleting_anything(tmp_path, capsys, random_weights):
    """A folder at --out/metrics.md: the earlier metrics.json was deleted, then 'Is a directory'."""
    from ldfusion.cli import evaluate

    ir_dir, vi_dir = image_folders(tmp_path, ["1"], ["1"])
    out = tmp_path / "scores"
    (out / "metrics.md").mkdir(parents=True)
    (out / "metrics.json").write_text("{}")
    args = ["--ir", str(ir_dir), "--vi", str(vi_dir), "--fused", str(vi_dir), "--out", str(out), "-q"]
    assert evaluate.main(args) == 2
    assert f"{out / 'metrics.md'} is a folder where metrics.md goes" in one_error_line(capsys, "ldfusion eval")
    assert (out / "metrics.json").read_text() == "{}"


def test_eval_refuses_to_save_fused_images_over_its_inputs(tmp_path, capsys, random_weights):
    from ldfusion.cli import evaluate

    ir_dir, vi_dir = image_folders(tmp_path, ["1", "2"], ["1", "2"])
    before = (ir_dir / "1.png").read_bytes()
    args = ["--ir", str(ir_dir), "--vi", str(vi_dir), "--fuse-with", str(random_weights["ld-lite"]), "--device", "cpu",
            "--save-fused", str(ir_dir), "--out", str(tmp_path / "scores"), "-q"]
    assert evaluate.main(args) == 2
    assert "--save-fused" in one_error_line(capsys, "ldfusion eval")
    assert (ir_dir / "1.png").read_bytes() == before
    assert not (tmp_path / "scores").exists()  # refused before any work


def test_fuse_refuses_existing_outputs_without_overwrite(tmp_path, capsys, random_weights):
    ir_dir, vi_dir = image_folders(tmp_path, ["1", "2"], ["1", "2"])
    out = tmp_path / "out"
    assert fuse_cli.main(fuse_args(ir_dir, vi_dir, out, random_weights["ld-lite"])) == 0
    assert fuse_cli.main(fuse_args(ir_dir, vi_dir, out, random_weights["ld-lite"])) == 2
    assert "already holds 2 of the fused images (first: 1.png); pass --overwrite" in one_error_line(capsys, "ldfusion fuse")
    assert fuse_cli.main(fuse_args(ir_dir, vi_dir, out, random_weights["ld-lite"], "--overwrite")) == 0
    (tmp_path / "taken").write_text("a file")
    assert fuse_cli.main(fuse_args(ir_dir, vi_dir, tmp_path / "taken", random_weights["ld-lite"])) == 2
    assert "is a file, not a folder" in one_error_line(capsys, "ldfusion fuse")


# --- 3. finite numbers, sane rates ----------------------------------------------------------


@pytest.mark.parametrize(
    "override, expected",
    [
        ("streams.0.sync.offset_s=.nan", "streams[0].sync.offset_s: must be a finite number"),
        ("streams.0.sync.slop_s=.inf", "streams[0].sync.slop_s: must be a finite number"),
        ("streams.0.sync.offset_s=nan", "must be a finite number"),
        ("streams.0.ir.fps=-.inf", "must be a finite number"),
        ("streams.0.visible.fps=0.000278", "fps must be between 0.1 and 1000"),
        ("streams.0.visible.fps=1e9", "fps must be between 0.1 and 1000"),
        ("model.max_wait_ms=.nan", "model.max_wait_ms: must be a finite number"),
        ("run.duration_s=.inf", "run.duration_s: must be a finite number"),
    ],
)
def test_non_finite_or_absurd_numbers_are_one_line_errors(tmp_path, capsys, random_weights, override, expected):
    config = write_config(tmp_path, video_config(tmp_path))
    assert run_command(config, "--set", override, weights=random_weights["ld-lite"]) == 2
    assert expected in one_error_line(capsys, "ldfusion run")
    assert not (tmp_path / "out").exists()


def calibration_file(tmp_path: Path, **changes) -> Path:
    data = Registration(np.eye(3), (64, 48), (64, 48)).to_dict()
    data.update(changes)
    path = tmp_path / "calib.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"time_offset_s": float("nan")}, "time_offset_s: must be a finite number"),
        ({"time_offset_s": float("inf")}, "time_offset_s: must be a finite number"),
        ({"source_size": [float("inf"), 48]}, "source_size must be [width, height] of whole numbers"),
        ({"destination_size": [64, "48"]}, "destination_size must be [width, height] of whole numbers"),
        ({"destination_size": [10**9, 48]}, "destination_size must be [width, height] of whole numbers"),
        ({"error_px": float("nan")}, "error_px: must be a finite number"),
        ({"crop": [0, 0, float("nan"), 10]}, "crop must be [x, y, width, height] of whole numbers"),
        ({"H": [[1.0, 0.0, 0.0], [0.0, float("nan"), 0.0], [0.0, 0.0, 1.0]]}, "H must be finite; it holds 1 NaN or infinite value(s)"),
        ({"H": [[1.0, 0.0], [0.0, 1.0]]}, "H must be a 3x3 matrix; got shape (2, 2)"),
    ],
)
def test_calibration_files_with_bad_numbers_are_refused(tmp_path, changes, expected):
    with pytest.raises(CalibrationError) as exc:
        load_registration(calibration_file(tmp_path, **changes))
    message = str(exc.value)
    assert expected in message and "\n" not in message


def test_run_with_a_nan_calibration_offset_is_one_line(tmp_path, capsys, random_weights):
    data = video_config(tmp_path)
    data["streams"][0]["registration"] = {"calibration": str(calibration_file(tmp_path, time_offset_s=float("nan")))}
    assert run_command(write_config(tmp_path, data), weights=random_weights["ld-lite"]) == 2
    assert "time_offset_s: must be a finite number" in one_error_line(capsys, "ldfusion run")


# --- 5. registrations that map the IR image off-screen ------------------------------------


def shifted(dx: float, size=(64, 48)) -> Registration:
    return Registration(np.array([[1, 0, dx], [0, 1, 0], [0, 0, 1]], float), size, size, model="affine")


@pytest.mark.parametrize("dx", [10_000.0, -62.0])  # entirely off-screen; a 2-pixel sliver
def test_a_registration_that_maps_ir_off_screen_is_refused(dx):
    plan = plan_from_calibration(shifted(dx), "ir_to_visible", crop=False)
    with pytest.raises(DataError, match=r"calib.yaml: maps the IR image onto only \d+\.\d% of the visible frame"):
        check_overlap(plan, "calib.yaml")


def test_a_map_across_the_horizon_is_refused_as_the_warp_sees_it():
    """OpenCV's warp ignores which side of the camera a point lies on and counted 27 % of the
    frame covered (a warning), while the pipeline's warp sampled nothing: a visible-only output."""
    H = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.02, -1.0]])
    plan = plan_from_calibration(Registration(H, (160, 120), (160, 120)), "ir_to_visible", crop=False)
    with pytest.raises(DataError, match=r"maps the IR image onto only 0\.0% of the visible frame"):
        check_overlap(plan, "calib.yaml")


def test_a_partial_overlap_runs_with_a_warning(caplog):
    check_overlap(plan_from_calibration(shifted(40.0), "ir_to_visible", crop=False), "calib.yaml")
    assert "covers only 38% of the visible frame" in caplog.text
    check_overlap(plan_from_calibration(shifted(-40.0), "visible_to_ir", crop=False), "calib.yaml")
    assert "the visible image covers only 38% of the IR frame" in caplog.text


def test_run_refuses_an_off_screen_calibration_in_one_line(tmp_path, capsys, random_weights):
    path = save_registration(tmp_path / "calib.yaml", shifted(10_000.0))
    data = video_config(tmp_path)
    data["streams"][0]["registration"] = {"calibration": str(path)}
    assert run_command(write_config(tmp_path, data), weights=random_weights["ld-lite"]) == 2
    line = one_error_line(capsys, "ldfusion run")
    assert "of the visible frame (off-screen?)" in line
    assert "(at frame" not in line  # the file is at fault, not a frame: frame places are for frames of another size


# --- 6. non-finite weights and network output --------------------------------------------


def nan_weights(tmp_path: Path) -> Path:
    net = build_network(get_variant("ld-lite"))
    with torch.no_grad():
        next(net.parameters())[0].fill_(float("nan"))
    return save_checkpoint(tmp_path / "nan.pt", net)


def test_weights_with_nan_are_refused_at_load_time(tmp_path):
    with pytest.raises(CheckpointError, match=r"nan\.pt: weights hold non-finite values \(\d+ NaN/inf in encoder\."):
        load_model(nan_weights(tmp_path))


def test_non_finite_output_stops_the_batch_naming_the_weights(random_weights):
    # The torch backend: the test breaks the loaded model's weights in place, which an
    # OpenVINO export made at load time would not see.
    fuser = Fuser.from_weights(str(random_weights["ld-lite"]), options=FuserOptions(device="cpu", backend="torch"))
    visible, ir = marked_frame(0, 32, 24), marked_frame(0, 32, 24)[:, :, 0]
    assert fuser.fuse_arrays([visible], [ir])[0].shape == (24, 32, 3)
    with torch.no_grad():  # weights that blow up at run time (e.g. an overflow), not at load
        for parameter in fuser.model.parameters():
            parameter.fill_(float("inf"))
    with pytest.raises(CheckpointError, match="network output is not finite .* with weights '.*ld-lite.pt'"):
        fuser.fuse_arrays([visible], [ir])


def overflowing_weights(tmp_path: Path) -> Path:
    """Finite weights (every one times 1e30) whose activations overflow to inf and NaN on any input."""
    torch.manual_seed(0)
    net = build_network(get_variant("ld-lite"))
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.mul_(1e30)
    return save_checkpoint(tmp_path / "huge.pt", net)


def test_weights_that_overflow_are_refused_on_openvino_too(tmp_path, capsys):
    """OpenVINO gives 0 where PyTorch gives NaN: fuse wrote black images with exit 0, since the
    per-batch check saw finite numbers. The CPU default backend must refuse these weights too."""
    pytest.importorskip("openvino")
    ir_dir, vi_dir = image_folders(tmp_path, ["1"], ["1"])
    code = fuse_cli.main(["--ir", str(ir_dir), "--vi", str(vi_dir), "--out", str(tmp_path / "out"),
                          "--weights", str(overflowing_weights(tmp_path)), "--device", "cpu", "--backend", "openvino", "-q"])
    assert code == 2 and "network output is not finite" in one_error_line(capsys, "ldfusion fuse")
    assert not (tmp_path / "out" / "1.png").exists()


def test_fuse_with_nan_weights_is_one_line(tmp_path, capsys):
    ir_dir, vi_dir = image_folders(tmp_path, ["1"], ["1"])
    code = fuse_cli.main(["--ir", str(ir_dir), "--vi", str(vi_dir), "--out", str(tmp_path / "out"),
                          "--weights", str(nan_weights(tmp_path)), "--device", "cpu", "-q"])
    assert code == 2 and "non-finite values" in one_error_line(capsys, "ldfusion fuse")


# --- 7. the Python API: inputs of the wrong kind ---------------------------------------------


@pytest.fixture(params=["torch", "openvino"])
def api_fuser(request, random_weights):
    """Both CPU backends: OpenVINO returned a plausible image for NaN infrared, PyTorch blamed the weights."""
    if request.param == "openvino":
        pytest.importorskip("openvino")
    return Fuser.from_weights(str(random_weights["ld-lite"]), options=FuserOptions(device="cpu", backend=request.param))


@pytest.mark.parametrize("visible, ir, error, message", [
    (torch.full((1, 3, 24, 32), 128, dtype=torch.uint8), torch.full((1, 1, 24, 32), 128, dtype=torch.uint8), TypeError, "takes float tensors in"),
    (torch.full((1, 3, 24, 32), 128.0), torch.full((1, 1, 24, 32), 128.0), ValueError, "got values from 128 to 128 .visible."),
    (torch.full((1, 3, 24, 32), 0.5), torch.full((1, 1, 24, 32), float("nan")), ValueError, "no finite value and NaN or inf .ir."),
    (torch.full((1, 3, 24, 32), float("nan")), torch.full((1, 1, 24, 32), 0.5), ValueError, "finite floats in"),
    (torch.full((0, 3, 24, 32), 0.5), torch.full((0, 1, 24, 32), 0.5), ValueError, "with B, H, W > 0"),
    (torch.full((1, 4, 24, 32), 0.5), torch.full((1, 1, 24, 32), 0.5), ValueError, r"must be \(B, 3, H, W\)"),
    (torch.full((1, 24, 32, 3), 0.5), torch.full((1, 1, 24, 32), 0.5), ValueError, r"must be \(B, 3, H, W\)"),
    (torch.full((2, 3, 24, 32), 0.5), torch.full((1, 1, 24, 32), 0.5), ValueError, "differ in batch or size"),
])
def test_fuse_rgb_refuses_inputs_it_would_fuse_into_garbage(api_fuser, visible, ir, error, message):
    """uint8 or 0..255 tensors came out 44 % saturated white; NaN passed (OpenVINO) or blamed the weights."""
    with pytest.raises(error, match=message):
        api_fuser.fuse_rgb(visible, ir)
    fused = api_fuser.fuse_rgb(torch.full((1, 3, 24, 32), 0.5), torch.full((1, 1, 24, 32), 0.25))
    assert fused.shape == (1, 3, 24, 32) and bool(torch.isfinite(fused).all())


@pytest.mark.parametrize("vi_y, ir, error, message", [
    (torch.full((1, 1, 24, 32), 0.5), torch.full((1, 1, 24, 32), 0.5).index_put_((torch.tensor([0]),) * 2, torch.tensor(float("nan"))),
     ValueError, r"fuse_y: the inputs must be finite floats in .*NaN or inf \(ir\)"),
    (np.full((1, 1, 24, 32), 0.5, np.float32), torch.full((1, 1, 24, 32), 0.5), TypeError, "fuse_y: vi_y must be a torch.Tensor"),
    (torch.full((1, 4, 24, 32), 0.5), torch.full((1, 1, 24, 32), 0.5), ValueError, r"fuse_y: vi_y must be \(B, 1, H, W\)"),
])
def test_fuse_y_refuses_inputs_as_fuse_rgb_does(api_fuser, vi_y, ir, error, message):
    """One NaN pixel changed OpenVINO's output by up to 0.37 without a word, and PyTorch's error
    blamed the weights; a numpy array met 'has no attribute float'."""
    with pytest.raises(error, match=message):
        api_fuser.fuse_y(vi_y, ir)
    assert api_fuser.fuse_y(torch.full((1, 1, 24, 32), 0.5), torch.full((1, 1, 24, 32), 0.25)).shape == (1, 1, 24, 32)


def test_resampling_overshoot_is_fused_as_before(api_fuser):
    """Bicubic resizing overshoots [0, 1] a little (-0.16 to 1.16); such frames were fused before
    the range check and still are (refused: 0.5 up front)."""
    ramp = np.linspace(-0.16, 1.16, 24 * 32, dtype=np.float32).reshape(24, 32)
    assert api_fuser.fuse_arrays([np.dstack([ramp] * 3)], [ramp])[0].shape == (24, 32, 3)
    tensor = torch.from_numpy(ramp)[None, None]
    assert api_fuser.fuse_rgb(tensor.expand(1, 3, 24, 32), tensor).shape == (1, 3, 24, 32)


@pytest.mark.parametrize("visible, ir, error, message", [
    ([np.full((24, 32, 3), 128.0, np.float32)], [np.full((24, 32), 128.0, np.float32)], ValueError, "float frames must be finite and in"),
    ([np.full((24, 32, 3), 0.5, np.float32)], [np.full((24, 32), np.nan, np.float32)], ValueError, "NaN or inf"),
    (np.zeros((1, 24, 32, 3), np.uint8), [np.zeros((24, 32), np.uint8)], TypeError, "takes lists of frames"),
    ([np.zeros((0, 32, 3), np.uint8)], [np.zeros((0, 32), np.uint8)], ValueError, "frames must have pixels"),
])
def test_fuse_arrays_refuses_inputs_it_would_fuse_into_garbage(api_fuser, visible, ir, error, message):
    """float32 frames of 0..255 came out 107 grey levels off; NaN black; an array batch or an empty frame a bare numpy or torch error."""
    with pytest.raises(error, match=message):
        api_fuser.fuse_arrays(visible, ir)


# --- 8. crafted checkpoints ------------------------------------------------------------------


def crafted_checkpoint(tmp_path: Path, **variant) -> Path:
    spec = get_variant("ld-lite").to_dict()
    spec.update(variant)
    payload = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "variant": spec, "state_dict": {}, "config": {}}
    torch.save(payload, tmp_path / "crafted.pt")
    return tmp_path / "crafted.pt"


@pytest.mark.parametrize(
    "variant, expected",
    [
        ({"content_dim": 4096}, "content_dim must be an integer in 1..128; got 4096"),
        ({"content_dim": "16"}, "content_dim must be an integer in 1..128; got '16'"),
        ({"n_downsample": 40}, "n_downsample must be an integer in 2..5"),
        ({"mlp_dim": True}, "mlp_dim must be an integer"),
        ({"name": 7}, "variant name must be a non-empty string"),
        ({"evil": 1}, "unknown field(s) evil"),
        ({"encoder_widths": [4096, 4096, 4096, 4096]}, "encoder_widths must be 4 integers in 1..256"),
    ],
)
def test_a_crafted_variant_fails_before_any_allocation(tmp_path, monkeypatch, variant, expected):
    def no_allocation(*_args, **_kwargs):
        raise AssertionError("the network was built before the variant was checked")

    monkeypatch.setattr("ldfusion.checkpoint.build_network", no_allocation)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(crafted_checkpoint(tmp_path, **variant))
    assert expected in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "training, expected",
    [
        ("not a dict", "is a str, not a mapping"),
        ({"epoch": "3", "step": 30, "optimizer": {}}, "needs whole, non-negative epoch and step"),
        ({"epoch": 3, "step": 30}, "has no optimizer state"),
    ],
)
def test_a_malformed_resume_file_is_one_line(tmp_path, training, expected):
    path = save_checkpoint(tmp_path / "last.pt", build_network(get_variant("ld-lite")), training={"x": 1})
    payload = torch.load(path, weights_only=True)
    payload["training"] = training
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="malformed training state") as exc:
        load_checkpoint(path)
    assert expected in str(exc.value)


def test_resume_turns_a_foreign_optimizer_state_into_one_line():
    from ldfusion.training.cli import resume

    class Trainer:
        def resume(self, path, state):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of optimizer's group")

    with pytest.raises(CheckpointError, match="last.pt: cannot resume from this training state \\(ValueError: loaded state dict"):
        resume(Trainer(), Path("last.pt"), None)


# --- 9. everyday mistakes ---------------------------------------------------------------------


def test_out_that_is_an_existing_file_is_one_line(tmp_path, capsys, random_weights):
    config = write_config(tmp_path, video_config(tmp_path))
    (tmp_path / "taken").write_text("a file")
    assert run_command(config, "--out", str(tmp_path / "taken"), weights=random_weights["ld-lite"]) == 2
    assert "is a file, not a folder" in one_error_line(capsys, "ldfusion run")


def test_a_png_sink_path_that_is_a_file_is_one_line(tmp_path, capsys, random_weights):
    config = write_config(tmp_path, video_config(tmp_path, sinks=[{"kind": "png", "path": "frames"}]))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "frames").write_text("a file")
    assert run_command(config, weights=random_weights["ld-lite"]) == 2
    assert "but that is a file" in one_error_line(capsys, "ldfusion run")


def test_an_mp4_path_without_a_video_suffix_is_one_line(tmp_path, capsys, random_weights):
    config = write_config(tmp_path, video_config(tmp_path, sinks=[{"kind": "mp4", "path": "result"}]))
    assert run_command(config, weights=random_weights["ld-lite"]) == 2
    assert "must end in .mp4" in one_error_line(capsys, "ldfusion run")


@pytest.mark.parametrize("device", ["gpu0", "cuda:abc", "cuda:99"])
def test_an_unknown_device_is_one_line(tmp_path, capsys, random_weights, device):
    config = write_config(tmp_path, video_config(tmp_path))
    assert run_command(config, "--device", device, weights=random_weights["ld-lite"]) == 2
    assert repr(device) in one_error_line(capsys, "ldfusion run")


def test_a_full_disk_is_one_line(tmp_path, capsys, random_weights, monkeypatch):
    import errno

    from pipeline import runner

    def full_disk(path, _obj):  # what writing out_dir/config.yaml meets on a full disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(runner, "write_yaml", full_disk)
    config = write_config(tmp_path, video_config(tmp_path))
    assert run_command(config, weights=random_weights["ld-lite"]) == 2
    assert "No space left on device: " in one_error_line(capsys, "ldfusion run")


def test_ctrl_c_during_start_up_is_one_line(monkeypatch, capsys):
    def interrupted_import(_name):
        raise KeyboardInterrupt

    monkeypatch.setattr(dispatcher.importlib, "import_module", interrupted_import)
    assert dispatcher.main(["run", "config.yaml"]) == 130
    assert one_error_line(capsys, "ldfusion run") == "ldfusion run: interrupted"


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_swallowed_by_a_library_import_still_ends_the_command(monkeypatch, capsys, sig, code, word):
    """A library's bare ``except:`` around an optional import caught the KeyboardInterrupt of a
    Ctrl-C one second into `ldfusion run`: it fused every frame and exited 0 (4 of 6 tries)."""
    import types

    ran = []

    def import_swallowing_the_signal(_name):
        try:
            os.kill(os.getpid(), sig)  # lands while the library imports ...
            time.sleep(0.05)
        except BaseException:  # noqa: BLE001 - ... whose optional import swallows everything
            pass
        return types.SimpleNamespace(main=lambda argv: ran.append(argv) or 0)

    monkeypatch.setattr(dispatcher.importlib, "import_module", import_swallowing_the_signal)
    previous = signal.signal(sig, lambda *_: None)  # were the command not to record it, the test run survives and fails
    try:
        assert dispatcher.main(["run", "config.yaml"]) == code
    finally:
        signal.signal(sig, previous)
    assert ran == []  # the command itself never started
    assert one_error_line(capsys, "ldfusion run") == f"ldfusion run: {word}"


@pytest.mark.parametrize("catches_it", [True, False])
def test_sigterm_ends_a_command_as_ctrl_c_does_with_exit_143(monkeypatch, capsys, catches_it):
    """SIGTERM's default killed fuse, eval, calibrate and train with no word and no cleanup.
    It now goes through the command's own Ctrl-C handling, or the dispatcher's, and the exit
    and the line say SIGTERM (the commands' line said "interrupted")."""
    import types

    from ldfusion.cli.common import one_line_errors

    @one_line_errors("ldfusion fuse")
    def caught(_argv):  # as every command's main is
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return 0

    def uncaught(_argv):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return 0

    command = caught if catches_it else uncaught

    def survive(*_):  # were the dispatcher not to handle it, the test run survives and fails
        pass

    monkeypatch.setattr(dispatcher.importlib, "import_module", lambda _name: types.SimpleNamespace(main=command))
    previous = signal.signal(signal.SIGTERM, survive)
    try:
        assert dispatcher.main(["fuse"]) == 143
        assert signal.getsignal(signal.SIGTERM) is survive  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert one_error_line(capsys, "ldfusion fuse") == "ldfusion fuse: terminated"  # said "error: terminated" where the command caught it


def _wait_until_mapped(pid: int, library: str, timeout_s: float) -> bool:
    """Whether a shared library whose path contains ``library`` got mapped into process ``pid`` in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if library in Path(f"/proc/{pid}/maps").read_text():
                return True
        except OSError:  # the process has ended
            return False
        time.sleep(0.005)
    return False


def test_ctrl_c_in_the_first_second_of_a_real_process_is_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "ldfusion_cli.main", "run", str(REPO_ROOT / "configs" / "video_to_mp4.yaml")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # Interrupt while torch is still loading (its library mapped into the process): the
    # moment a user gives up on a slow start. A fixed sleep raced Python's own start-up on a
    # loaded machine (a signal before the dispatcher runs kills the interpreter outright).
    assert _wait_until_mapped(process.pid, "libtorch", timeout_s=60), "torch never started loading"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_an_unexpected_error_is_one_line_unless_debugging(monkeypatch, capsys):
    class Broken:
        @staticmethod
        def main(_argv):
            raise RuntimeError("something nobody foresaw\nsecond line")

    monkeypatch.setattr(dispatcher.importlib, "import_module", lambda _name: Broken)
    monkeypatch.delenv("LDFUSION_DEBUG", raising=False)
    assert dispatcher.main(["eval"]) == 1
    line = one_error_line(capsys, "ldfusion eval")
    assert "RuntimeError: something nobody foresaw" in line and "LDFUSION_DEBUG=1" in line
    monkeypatch.setenv("LDFUSION_DEBUG", "1")
    with pytest.raises(RuntimeError):
        dispatcher.main(["eval"])


# --- 10. malformed ZeroMQ messages, bad endpoints, empty camera frames -------------------------

GOOD_HEADER = {"stream": "cam0", "seq": 4, "shape": [2, 3, 3], "dtype": "uint8"}


def message(header, pixels: bytes = bytes(18), parts: int = 3) -> list[bytes]:
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    return [b"fused/cam0", encoded, pixels][:parts]


@pytest.mark.parametrize(
    "parts, expected",
    [
        (message(GOOD_HEADER, parts=2), "expected 3 parts (topic, header, pixels); got 2"),
        (message(b"42"), "header is a JSON int, not an object"),
        (message(b"[1, 2]"), "header is a JSON list, not an object"),
        (message(b"{nope"), "header is not JSON"),
        (message({"stream": "cam0", "seq": 4}), "seq 4: header lacks shape, dtype"),
        (message({**GOOD_HEADER, "shape": [-2, 3, 3]}), "seq 4: shape [-2, 3, 3] is not"),
        (message({**GOOD_HEADER, "shape": [10**12, 10**12, 3]}), "is not [height, width]"),
        (message({**GOOD_HEADER, "shape": "2x3"}), "shape '2x3' is not"),
        (message({**GOOD_HEADER, "shape": [2.5, 3]}), "is not [height, width]"),
        (message({**GOOD_HEADER, "dtype": "complex1024"}), "dtype 'complex1024' is not one of"),
        (message({**GOOD_HEADER, "dtype": ["uint8"]}), "dtype ['uint8'] is not one of"),
        (message(GOOD_HEADER, pixels=b"123"), "3 bytes do not make a 2x3x3 uint8 frame"),
    ],
)
def test_malformed_messages_are_named(parts, expected):
    with pytest.raises(DataError) as exc:
        decode_message(parts)
    assert expected in str(exc.value) and "fused/cam0" in str(exc.value)


def test_a_good_message_decodes():
    header, frame = decode_message(message(GOOD_HEADER, pixels=bytes(range(18))))
    assert header["topic"] == "fused/cam0" and frame.shape == (2, 3, 3) and frame[1, 2, 2] == 17


@pytest.fixture
def publisher():
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    port = socket.bind_to_random_port("tcp://127.0.0.1")
    yield socket, f"tcp://127.0.0.1:{port}"
    socket.close(0)
    context.term()


def publish_until_received(socket, messages: list[list[bytes]], subscriber: Subscriber):
    """PUB drops what it sends before the subscription arrives: resend until the subscriber sees one."""
    for _ in range(50):
        for parts in messages:
            socket.send_multipart(parts)
        try:
            received = subscriber.receive(0.1)
        except DataError as exc:
            return exc
        if received is not None:
            return received
    raise AssertionError("nothing arrived")


def test_the_subscriber_skips_and_counts_malformed_messages_when_asked(publisher):
    socket, endpoint = publisher
    good = message(GOOD_HEADER)
    with Subscriber(endpoint, skip_malformed=True) as subscriber:
        assert isinstance(publish_until_received(socket, [good], subscriber), tuple)  # subscribed now
        while subscriber.receive(0.2) is not None:  # drain the resent copies
            pass
        socket.send_multipart(message(b"42"))
        socket.send_multipart(message({**GOOD_HEADER, "seq": 5}))
        received = subscriber.receive(5.0)
        assert received is not None and received[0]["seq"] == 5
        assert subscriber.malformed == 1
    with Subscriber(endpoint) as strict:
        error = publish_until_received(socket, [message(b"42")], strict)
        assert isinstance(error, DataError) and "header is a JSON int" in str(error)


def test_subscribe_command_skips_malformed_messages_and_reports_the_count(publisher, capsys):
    import threading

    socket, endpoint = publisher
    stop = threading.Event()

    def send():
        while not stop.is_set():
            socket.send_multipart(message({**GOOD_HEADER, "dtype": "bogus"}))
            socket.send_multipart(message(GOOD_HEADER))
            time.sleep(0.01)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        code = subscriber_cli.main(["--endpoint", endpoint, "--count", "3", "--timeout", "5", "--skip-malformed", "--summary-only", "-q"])
    finally:
        stop.set()
        sender.join()
    out = capsys.readouterr().out
    assert code == 0 and "received 3 frame(s)" in out and "malformed message(s)" in out


@pytest.mark.parametrize(
    "endpoint, expected",
    [("garbage", "cannot connect to endpoint 'garbage'"), ("tcp://", "the port must be 1-65535"), ("tcp://127.0.0.1:notaport", "the port must be 1-65535")],
)
def test_subscribe_to_a_garbage_endpoint_is_one_line(capsys, endpoint, expected):
    assert subscriber_cli.main(["--endpoint", endpoint, "--timeout", "0.2"]) == 2
    assert expected in one_error_line(capsys, "ldfusion subscribe")


class EmptyFrameCamera:
    """A camera whose driver hands back an empty array every other read, as some do."""

    def __init__(self) -> None:
        self.reads = 0

    def isOpened(self) -> bool:  # noqa: N802
        return True

    def read(self):
        self.reads += 1
        return True, marked_frame(self.reads, 64, 48) if self.reads % 2 else np.empty((0, 0, 3), np.uint8)

    def get(self, _prop: int) -> float:
        return 30.0

    def release(self) -> None:
        pass


def test_an_empty_camera_frame_is_a_failed_read_not_a_cv2_error():
    import threading

    camera = EmptyFrameCamera()
    config = SourceConfig(kind="camera", path="0", reconnect_backoff_s=0.01, reconnect_max_s=0.01)
    source = LiveCameraSource(config, VISIBLE, time.monotonic(), open_capture=lambda _camera: camera)
    stop = threading.Event()
    frames = []
    for index, _t, image in source.frames(stop):
        frames.append(image)
        if len(frames) == 4:
            stop.set()
    assert all(planes.size == (64, 48) for planes in frames)
    with pytest.raises(DataError, match="delivered an empty frame"):
        camera_planes(np.empty((0, 0), np.uint8))


def test_a_time_offset_that_pairs_nothing_is_an_error_and_the_summary_is_strict_json(tmp_path, capsys, random_weights):
    """An offset beyond the clip keeps every pair apart: nothing can be written, and the run
    must say so rather than exit 0 with an empty output. summary.json has no NaN latency."""
    data = video_config(tmp_path)
    data["streams"][0]["sync"] = {"offset_s": 100.0}
    assert run_command(write_config(tmp_path, data), weights=random_weights["ld-lite"]) == 2
    line = one_error_line(capsys, "ldfusion run")
    assert "stream cam0: none of its 6 IR and 6 visible frames were paired" in line and "sync.offset_s" in line
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(), parse_constant=lambda name: pytest.fail(name))
    assert summary["frames_out"] == 0 and summary["latency_ms_p50"] is None


@pytest.mark.parametrize("port", ["99999", "0", "-1", "http"])
def test_a_zmq_endpoint_with_a_port_out_of_range_is_refused_before_anything_runs(tmp_path, capsys, random_weights, port):
    """ZeroMQ itself binds port 99999 as 34463, silently: subscribers on 99999 would hear nothing."""
    data = video_config(tmp_path, sinks=[{"kind": "zmq", "endpoint": f"tcp://127.0.0.1:{port}"}])
    assert run_command(write_config(tmp_path, data), weights=random_weights["ld-lite"]) == 2
    assert f"the port must be 1-65535 (or * for any free port); got '{port}'" in one_error_line(capsys, "ldfusion run")


def test_a_key_given_twice_in_a_config_is_an_error_naming_it(tmp_path, capsys, random_weights):
    """PyYAML keeps the last of two keys: the first model block would vanish without a word."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(video_config(tmp_path)) + "model: {batch_size: 2}\n")
    assert run_command(config, weights=random_weights["ld-lite"]) == 2
    assert "the key 'model' appears twice" in one_error_line(capsys, "ldfusion run")


def test_yaml_anchors_and_merge_keys_still_load(tmp_path):
    from ldfusion.config import read_yaml

    path = tmp_path / "anchors.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n")
    assert read_yaml(path) == {"base": {"x": 1, "y": 2}, "derived": {"x": 1, "y": 3}}


def test_a_config_that_is_not_utf8_text_is_one_line_naming_the_file(tmp_path, capsys, random_weights):
    config = tmp_path / "binary.yaml"
    config.write_bytes(b"\xff\xfe\x00bin")
    assert run_command(config, weights=random_weights["ld-lite"]) == 2
    assert one_error_line(capsys, "ldfusion run") == f"ldfusion run: error: {config}: not a YAML config file (not UTF-8 text)"


def test_a_size_no_machine_holds_is_one_line_not_a_memory_error_class(capsys):
    from ldfusion.cli.common import one_line_errors

    @one_line_errors("ldfusion probe")
    def allocate() -> int:
        raise MemoryError("Unable to allocate 1006. GiB for an array with shape (100000, 100000, 3)")

    assert allocate() == 2
    assert one_error_line(capsys, "ldfusion probe") == (
        "ldfusion probe: error: not enough memory: Unable to allocate 1006. GiB for an array with shape (100000, 100000, 3)")


def test_wrong_output_kinds_and_names_are_refused_before_any_work(tmp_path, capsys, random_weights):
    """Each one line naming the option, found at the start (bench measured for minutes first)."""
    a_file, a_folder = tmp_path / "a_file", tmp_path / "a_folder"
    a_file.write_text("x")
    a_folder.mkdir()
    ir_dir, vi_dir = image_folders(tmp_path, ["1"], ["1"])
    cases = [
        (["bench", "--devices", "cpu", "--out", str(a_folder)], f"--out {a_folder} is a folder; bench writes its results to a JSON file"),
        (["demo", "--out", str(a_file)], f"--out {a_file} is a file, not a folder"),
        (["eval", "--ir", str(ir_dir), "--vi", str(vi_dir), "--fuse-with", str(random_weights["ld-lite"]), "--out", str(a_file)],
         f"--out {a_file} is a file, not a folder"),
        (["run", str(a_folder)], f"{a_folder} is a folder, not a config file"),
        (["run", str(write_config(tmp_path, video_config(tmp_path))), "--variant", "bogus"],  # checked with the file's values
         f"{tmp_path / 'run.yaml'}.model: variant must be one of fast, fast-wide-code, ld-lite, ldfusion; got 'bogus'"),
    ]
    for argv, expected in cases:
        assert dispatcher.main(argv) == 2, argv
        command = f"ldfusion {argv[0]}"
        assert one_error_line(capsys, command) == f"{command}: error: {expected}"
    assert a_file.read_text() == "x" and not any(a_folder.iterdir())
