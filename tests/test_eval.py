"""``ldfusion eval`` end to end on tiny synthetic folders and videos, and on MSRS when present."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from ldfusion.cli.evaluate import build_parser, luma_255, main, markdown_tables
from ldfusion.metrics import METRIC_NAMES, evaluate_all
from ldfusion.temporal_metrics import TEMPORAL_NAMES
from ldfusion.video import VideoWriter
from ldfusion.weights import AUTO_WEIGHTS, REGISTRY

H, W = 48, 64


def scene(seed: int, shape=(H, W)) -> tuple[np.ndarray, np.ndarray]:
    """A visible RGB image and an IR image (uint8) with shared structure."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.uniform(0, 255, shape).astype(np.float32), (0, 0), 2.0)
    base = cv2.normalize(base, None, 20, 230, cv2.NORM_MINMAX)
    visible = np.stack([base, base * 0.8 + 20, 255 - base], axis=-1).astype(np.uint8)
    ir = np.clip(255 - base + rng.normal(0, 5, shape), 0, 255).astype(np.uint8)
    return visible, ir


def write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    """ir/, vi/ and fused/ with three pairs (fused = per-pixel average, colour)."""
    for index, name in enumerate(("1", "2", "10")):
        visible, ir = scene(index)
        write_png(tmp_path / "ir" / f"{name}.png", ir)
        write_png(tmp_path / "vi" / f"{name}.jpg", visible)
        fused = ((visible.astype(np.float32) + ir[..., None]) / 2).astype(np.uint8)
        write_png(tmp_path / "fused" / f"{name}.png", fused)
    return {key: tmp_path / key for key in ("ir", "vi", "fused")} | {"out": tmp_path / "out"}


def run(folders: dict[str, Path], *extra: str) -> int:
    return main(["--ir", str(folders["ir"]), "--vi", str(folders["vi"]), "--out", str(folders["out"]), "-q", *extra])


def test_eval_folder_writes_csv_json_and_markdown(folders, capsys):
    assert run(folders, "--fused", str(folders["fused"]), "--name", "average") == 0
    out = folders["out"]

    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == ["1", "2", "10"]  # natural order, as `ldfusion fuse`
    report = json.loads((out / "metrics.json").read_text())
    assert report["method"] == "average" and report["count"] == 3
    assert set(report["mean"]) == set(METRIC_NAMES)

    # Scores match the library on the same images read the same way.
    visible = cv2.cvtColor(cv2.imread(str(folders["vi"] / "2.jpg")), cv2.COLOR_BGR2RGB)
    fused = cv2.cvtColor(cv2.imread(str(folders["fused"] / "2.png")), cv2.COLOR_BGR2RGB)
    ir = cv2.imread(str(folders["ir"] / "2.png"), cv2.IMREAD_GRAYSCALE).astype(np.float64)
    expected = evaluate_all(luma_255(fused), ir, luma_255(visible))
    second = report["images"][1]
    for name in METRIC_NAMES:
        assert second[name] == pytest.approx(expected[name], rel=1e-9)
        assert float(rows[1][name]) == pytest.approx(expected[name], abs=1e-5)
        assert report["mean"][name] == pytest.approx(np.mean([image[name] for image in report["images"]]))

    table = (out / "metrics.md").read_text()
    assert table.splitlines()[0].split("|")[1:-1] == [f" {h} " for h in ("method", "n", *METRIC_NAMES)]
    assert f"| average | 3 | {report['mean']['EN']:.4f} |" in table
    assert table.strip() in capsys.readouterr().out


def test_a_run_that_fails_part_way_leaves_no_summary_of_an_earlier_run(folders, capsys):
    assert run(folders, "--fused", str(folders["fused"])) == 0
    (folders["fused"] / "10.png").write_text("not an image")  # read only when its row is scored, after 1 and 2
    assert run(folders, "--fused", str(folders["fused"])) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    out = folders["out"]
    assert not (out / "metrics.json").exists() and not (out / "metrics.md").exists()
    with (out / "metrics.csv").open() as handle:
        assert [row["name"] for row in csv.DictReader(handle)] == ["1", "2"]  # this run's rows so far


@pytest.mark.parametrize("link", ["soft", "hard"])
def test_a_link_at_metrics_csv_is_replaced_not_written_through(folders, link):
    """A link planted at --out/metrics.csv made eval overwrite the file it pointed to."""
    precious = folders["out"].parent / "precious.txt"
    precious.write_text("precious\n")
    folders["out"].mkdir(parents=True, exist_ok=True)
    target = folders["out"] / "metrics.csv"
    target.symlink_to(precious) if link == "soft" else target.hardlink_to(precious)
    assert run(folders, "--fused", str(folders["fused"])) == 0
    assert precious.read_text() == "precious\n"
    assert not target.is_symlink() and target.read_text().startswith("name,")


def test_side_by_side_images_from_fuse_are_ignored(folders):
    write_png(folders["fused"] / "2_sbs.png", np.zeros((H, 3 * W, 3), np.uint8))
    assert run(folders, "--fused", str(folders["fused"])) == 0
    assert json.loads((folders["out"] / "metrics.json").read_text())["count"] == 3


def test_missing_fused_image_is_a_one_line_error(folders, capsys):
    (folders["fused"] / "10.png").unlink()
    assert run(folders, "--fused", str(folders["fused"])) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ldfusion eval: error: 1 pair(s) have no fused image" in err and "10" in err


def test_fused_image_without_sources_is_a_one_line_error(folders, capsys):
    write_png(folders["fused"] / "99.png", np.zeros((H, W), np.uint8))
    assert run(folders, "--fused", str(folders["fused"])) == 2
    assert "have no source pair (first: 99.png)" in capsys.readouterr().err


def test_fused_image_of_another_size_is_a_one_line_error(folders, capsys):
    write_png(folders["fused"] / "2.png", np.zeros((H + 2, W), np.uint8))
    assert run(folders, "--fused", str(folders["fused"])) == 2
    err = capsys.readouterr().err
    assert "2: fused and sources differ in size: 64x50 vs 64x48" in err
    # The row scored before the error is kept in a valid CSV.
    with (folders["out"] / "metrics.csv").open() as handle:
        assert [row["name"] for row in csv.DictReader(handle)] == ["1"]


def test_unpaired_sources_and_bad_arguments_are_one_line_errors(folders, capsys):
    assert run(folders, "--fused", str(folders["out"] / "nowhere")) == 2
    assert f"--fused {folders['out'] / 'nowhere'}: no such file or folder" in capsys.readouterr().err
    assert run(folders, "--fused", str(folders["fused"] / "clip.mp4")) == 2
    assert "must all be videos or all be images" in capsys.readouterr().err
    assert run(folders, "--fused", str(folders["fused"]), "--batch", "0") == 2
    assert "--batch must be at least 1" in capsys.readouterr().err
    (folders["vi"] / "1.jpg").unlink()
    assert run(folders, "--fused", str(folders["fused"])) == 2
    assert "have no partner" in capsys.readouterr().err


def test_a_missing_input_is_named_as_missing(folders, capsys):
    """It was "not a folder: nope", as if nope were there and of the wrong kind."""
    missing = folders["out"].parent / "nope"
    for option in ("--ir", "--vi", "--fused"):
        given = {"ir": folders["ir"], "vi": folders["vi"], "fused": folders["fused"], option[2:]: missing}
        argv = ["--ir", str(given["ir"]), "--vi", str(given["vi"]), "--fused", str(given["fused"]), "--out", str(folders["out"])]
        assert main(argv) == 2
        assert one_error(capsys) == f"ldfusion eval: error: {option} {missing}: no such file or folder"
    missing.symlink_to(folders["out"].parent / "gone")
    assert run(folders, "--fused", str(missing)) == 2
    assert one_error(capsys) == f"ldfusion eval: error: --fused {missing}: a link to nothing"


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


@pytest.mark.parametrize("option", [["--every", "1"], ["--max-frames", "3"], ["--no-temporal"]])
def test_video_options_on_images_are_refused(folders, capsys, random_weights, option):
    """They were ignored without a word, even --every 10; a value equal to the default is refused too."""
    for source in (["--fused", str(folders["fused"])], ["--fuse-with", str(random_weights["ld-lite"]), "--device", "cpu"]):
        assert run(folders, *source, *option) == 2
        assert one_error(capsys) == f"ldfusion eval: error: {option[0]} applies to video only, and these inputs are images; leave it out"
        assert not folders["out"].exists()  # refused before any work


@pytest.mark.parametrize("option", [["--model", "ld-lite"], ["--device", "auto"], ["--device", "cuda"], ["--batch", "4"], ["--int8"],
                                    ["--no-int8"], ["--precision", "f32"]])
def test_fusing_options_without_fuse_with_are_refused(folders, videos, capsys, option):
    """They set up the model, which --fused does not load: `--device cuda` passed on a machine without a GPU."""
    expected = f"ldfusion eval: error: {option[0]} sets up the fusing of --fuse-with, and --fused scores results already fused; leave it out"
    for inputs in (folders, videos):
        assert run(inputs, "--fused", str(inputs["fused"]), *option) == 2
        assert one_error(capsys) == expected
        assert not inputs["out"].exists()


def test_fuse_with_takes_the_cpu_runtime_of_fuse(folders, capsys):
    """eval could not score the int8 network that `fuse` runs by default: --int8 and --precision
    are taken as fuse takes them, and metrics.json says which ran."""
    assert run(folders, "--fuse-with", "default", "--device", "cpu", "--int8") == 0
    inputs = json.loads((folders["out"] / "metrics.json").read_text())["inputs"]
    assert (inputs["backend"], inputs["int8"]) == ("openvino", True)


def test_blank_or_multiline_name_is_refused(folders, capsys):
    """A blank --name fell back to the folder's name without a word; a line break split the table's row."""
    for name in ("", "   "):
        assert run(folders, "--fused", str(folders["fused"]), "--name", name) == 2
        assert one_error(capsys).startswith("ldfusion eval: error: --name is empty; ")
    assert run(folders, "--fused", str(folders["fused"]), "--name", "a\nb") == 2
    assert one_error(capsys) == "ldfusion eval: error: --name 'a\\nb' holds a line break, which would split the table's row; give it on one line"
    assert not folders["out"].exists()


def test_empty_fuse_with_is_refused(folders, capsys):
    """An empty --fuse-with (an unset shell variable) was taken for none: AttributeError, exit 1."""
    assert run(folders, "--fuse-with", "") == 2
    assert one_error(capsys).startswith("ldfusion eval: error: --fuse-with is empty; give a weights file or folder, or one of: auto ")
    assert not folders["out"].exists()


def markdown_cells(line: str) -> list[str]:
    """A Markdown table row's cells; an escaped pipe (\\|) stays inside its cell."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_a_pipe_in_the_method_name_stays_in_its_cell(folders, capsys):
    """--name 'a|b' added a column to metrics.md's row."""
    assert run(folders, "--fused", str(folders["fused"]), "--name", "a|b") == 0
    header, rule, row = (folders["out"] / "metrics.md").read_text().splitlines()
    assert len(markdown_cells(row)) == len(markdown_cells(header)) == len(markdown_cells(rule))
    assert markdown_cells(row)[0] == r"a\|b"
    assert json.loads((folders["out"] / "metrics.json").read_text())["method"] == "a|b"  # the data keeps the name as given


def test_names_from_paths_are_made_safe_for_markdown():
    """The method is the fused folder's or the weights' name when --name is left out; --name's checks miss those."""
    report = {"count": 1, "mean": dict.fromkeys(METRIC_NAMES, 0.5)}
    lines = markdown_tables("run|2\nsecond", report).splitlines()
    assert len(lines) == 3
    assert markdown_cells(lines[2])[:2] == [r"run\|2 second", "1"]
    assert len(markdown_cells(lines[2])) == len(markdown_cells(lines[0]))


def test_fuse_with_help_names_every_registry_name(monkeypatch):
    """The help listed default, ld-lite and ldfusion; auto and fast worked too."""
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option, so no name is split at its hyphen
    line = next(line for line in build_parser().format_help().splitlines() if line.strip().startswith("--fuse-with"))
    listed = re.sub(r"\([^)]*\)", "", line.split("registry name:", 1)[1])  # without "(bundled weights ...)"
    assert {name.strip() for name in listed.split(",")} == {AUTO_WEIGHTS, *REGISTRY}


def test_fuse_with_weights_fuses_first_and_saves(folders, random_weights):
    saved = folders["out"] / "fused"
    args = ("--fuse-with", str(random_weights["ld-lite"]), "--device", "cpu", "--batch", "2", "--save-fused", str(saved))
    assert run(folders, *args) == 0
    report = json.loads((folders["out"] / "metrics.json").read_text())
    assert report["count"] == 3 and report["inputs"]["model"] == "ld-lite"
    assert sorted(p.name for p in saved.iterdir()) == ["1.png", "10.png", "2.png"]
    # The saved results score the same when read back as fused images.
    again = dict(folders, out=folders["out"] / "again")
    assert run(again, "--fused", str(saved)) == 0
    reread = json.loads((again["out"] / "metrics.json").read_text())
    for name in METRIC_NAMES:
        assert reread["mean"][name] == pytest.approx(report["mean"][name], rel=1e-9)


# --- video -------------------------------------------------------------------------------

FRAMES = 5


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    with VideoWriter(path, fps, codec="mpeg4", crf=None, preset=None, options={"qscale": "2"}) as writer:
        for image in frames:
            writer.write_image(image)
    return path


@pytest.fixture
def videos(tmp_path: Path) -> dict[str, Path]:
    visible, ir = scene(3, (80, 96))
    shifts = range(FRAMES)
    vi_frames = [np.roll(visible, 2 * t, axis=1) for t in shifts]
    ir_frames = [np.roll(ir, 2 * t, axis=1) for t in shifts]
    fused_frames = [((v.astype(np.float32) + i[..., None]) / 2).astype(np.uint8) for v, i in zip(vi_frames, ir_frames)]
    return {
        "ir": write_video(tmp_path / "ir.mp4", ir_frames),
        "vi": write_video(tmp_path / "vi.mp4", vi_frames),
        "fused": write_video(tmp_path / "fused.mp4", fused_frames),
        "short": write_video(tmp_path / "short.mp4", fused_frames[:3]),
        "fast": write_video(tmp_path / "fast.mp4", fused_frames, fps=25),
        "out": tmp_path / "out",
    }


def test_eval_video_adds_temporal_metrics(videos, capsys):
    assert run(videos, "--fused", str(videos["fused"]), "--every", "2") == 0
    report = json.loads((videos["out"] / "metrics.json").read_text())
    assert [image["name"] for image in report["images"]] == ["frame_000000", "frame_000002", "frame_000004"]
    temporal = report["temporal"]
    assert temporal["frames"] == FRAMES and set(TEMPORAL_NAMES) <= set(temporal)
    assert temporal["warp_valid"] > 0.5
    assert report["frame_rate"] == pytest.approx(10.0)
    printed = capsys.readouterr().out
    assert "| method | frames | flicker_fused |" in printed


def test_eval_deep_infrared_video_follows_ir_16bit_as_images_do(videos, capsys):
    """The option reached image folders only: a 16-bit infrared clip was always stretched."""
    raw = [(30000 + 50 * frame.astype(np.uint16)).astype(np.uint16) for frame in _video_frames(videos["ir"])]
    deep = videos["ir"].with_name("ir16.mkv")
    with VideoWriter(deep, 10, codec="ffv1", crf=None, preset=None, pixel_format="gray16le") as writer:
        for frame in raw:
            writer.write_image(frame)
    scores = {}
    for mode in ("stretch", "scale"):
        argv = ["--ir", str(deep), "--vi", str(videos["vi"]), "--fused", str(videos["fused"]), "--out", str(videos["out"] / mode), "-q"]
        assert main([*argv, "--ir-16bit", mode, "--no-temporal"]) == 0
        scores[mode] = json.loads((videos["out"] / mode / "metrics.json").read_text())["images"][0]
    assert scores["stretch"] != scores["scale"]  # the infrared image the metrics compare with differs


def _video_frames(path: Path) -> list[np.ndarray]:
    from ldfusion.video import VideoReader

    with VideoReader(path, luma_only=True) as reader:
        return [frame.planes.data[0] for frame in reader]


def test_eval_one_frame_video_leaves_the_temporal_metrics_out(videos, capsys):
    """Flicker and warping error need two frames: one frame was reported as perfectly steady."""
    one = {name: write_video(videos["ir"].with_name(f"one_{name}.mp4"), _colour_frames(videos[name])[:1])
           for name in ("ir", "vi", "fused")}
    argv = ["--ir", str(one["ir"]), "--vi", str(one["vi"]), "--fused", str(one["fused"]), "--out", str(videos["out"]), "-q"]
    assert main(argv) == 0
    report = json.loads((videos["out"] / "metrics.json").read_text())
    assert report["count"] == 1 and "temporal" not in report
    assert "temporal metrics need two frames or more; the video gave 1" in capsys.readouterr().err


def _colour_frames(path: Path) -> list[np.ndarray]:
    from ldfusion.video import VideoReader

    with VideoReader(path) as reader:
        return list(reader.images())


def test_eval_video_fused_by_a_model(videos, random_weights):
    assert run(videos, "--fuse-with", str(random_weights["ld-lite"]), "--device", "cpu", "--max-frames", "3") == 0
    report = json.loads((videos["out"] / "metrics.json").read_text())
    assert report["count"] == 3 and report["temporal"]["frames"] == 3


def test_eval_video_with_missing_frames_or_another_rate_is_an_error(videos, capsys):
    assert run(videos, "--fused", str(videos["short"])) == 2
    assert "short.mp4 has 3 frames but the ir/vi pair has 5" in capsys.readouterr().err
    # `run` with run.max_frames 3 fused three: eval --max-frames 3 scores them (it refused them).
    assert run(videos, "--fused", str(videos["short"]), "--max-frames", "3", "--no-temporal") == 0
    assert run(videos, "--fused", str(videos["short"]), "--max-frames", "4") == 2
    assert run(videos, "--fused", str(videos["fast"])) == 2
    assert "different frame rates: 25 vs 10 fps" in capsys.readouterr().err


def test_eval_scores_runs_own_output_of_odd_sized_clips(tmp_path, capsys):
    """`run` pads odd-sized sources by a row and a column (4:2:0 needs even sides); eval refused
    that output ("frame_000000: fused and sources differ in size: 96x80 vs 95x79")."""
    import av

    visible, ir = scene(3, (79, 95))
    sources = {}
    for name, image, layout in (("ir", np.dstack([ir] * 3), "gray"), ("vi", visible, "yuv444p")):
        sources[name] = tmp_path / f"{name}.mkv"  # FFV1 straight from PyAV: odd sides kept, as a camera may record
        with av.open(str(sources[name]), "w") as container:
            stream = container.add_stream("ffv1", rate=10)
            stream.width, stream.height, stream.pix_fmt = 95, 79, layout
            for _ in range(3):
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    fused = write_video(tmp_path / "fused.mp4", [visible] * 3)  # 4:2:0: padded to 96x80
    argv = ["--ir", str(sources["ir"]), "--vi", str(sources["vi"]), "--out", str(tmp_path / "out"), "-q", "--no-temporal"]
    assert main([*argv, "--fused", str(fused)]) == 0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["count"] == 3
    other = write_video(tmp_path / "other.mp4", [np.zeros((48, 64, 3), np.uint8)] * 3)
    assert main([*argv, "--fused", str(other)]) == 2
    assert "frame 0 of " + str(other) + ": fused and sources differ in size: 64x48 vs 95x79" in capsys.readouterr().err


def test_eval_reads_transport_streams_as_video(videos, capsys):
    """A recorder's .ts files were taken for images ("got ir.ts (images)")."""
    ts = {name: write_video(videos["ir"].with_name(f"{name}.ts"), _colour_frames(videos[name])) for name in ("ir", "vi", "fused")}
    argv = ["--ir", str(ts["ir"]), "--vi", str(ts["vi"]), "--fused", str(ts["fused"]), "--out", str(videos["out"]), "-q", "--no-temporal"]
    assert main(argv) == 0
    assert json.loads((videos["out"] / "metrics.json").read_text())["count"] == FRAMES


def test_eval_corrupt_video_is_a_one_line_error(videos, capsys):
    broken = videos["out"].parent / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    assert run(videos, "--fused", str(broken)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ldfusion eval: error:") and "broken.mp4" in err and "\n" not in err


# --- real data -----------------------------------------------------------------------------


def test_eval_fuse_with_ld_lite_on_msrs(shared_data, ldlite_weights, tmp_path, capsys):
    """The first three MSRS pairs fused by the authors' LD-Lite weights, scored."""
    msrs = shared_data / "pairs" / "msrs"
    names = sorted(p.name for p in (msrs / "ir").glob("*.png"))[:3]
    for kind in ("ir", "vi"):
        (tmp_path / kind).mkdir()
        for name in names:
            (tmp_path / kind / name).symlink_to(msrs / kind / name)
    folders = {"ir": tmp_path / "ir", "vi": tmp_path / "vi", "out": tmp_path / "out"}
    assert run(folders, "--fuse-with", str(ldlite_weights), "--model", "ld-lite", "--device", "cpu") == 0
    report = json.loads((folders["out"] / "metrics.json").read_text())
    assert report["count"] == 3
    mean = report["mean"]
    assert 0 < mean["EN"] <= 8 and 0 < mean["SSIM"] <= 2 and 0 < mean["Qabf"] < 1 and mean["MI"] > 0
    assert "| ld-lite (" in capsys.readouterr().out
