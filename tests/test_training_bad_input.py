"""`ldfusion train` refuses bad input in one line, exit 2: outputs onto its own inputs,
videos that do not pair by index, values out of range, a crop too large for the images, and
a resume that does not fit the config."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from ldfusion.checkpoint import load_checkpoint
from ldfusion.config import from_dict
from ldfusion.errors import DataError
from ldfusion.training.cli import main as train_main
from ldfusion.training.config import TrainConfig
from ldfusion.training.data import DataConfig, FolderSource, PairedDataset, VideoSource, load_folder_pairs, load_video_pairs
from ldfusion.training.trainer import Trainer
from ldfusion.video import VideoWriter
from tests.test_training import _synthetic_pairs

DISTILL_ONLY = {"sim": 0, "prompt_global": 0, "prompt_patch": 0, "perceptual": 0, "distill": 1}


def _distill_config(tmp_path: Path, teacher: Path, data: dict | None = None, **top) -> dict:
    """A run that takes seconds: an LD-Lite student distilled from random LD-Lite weights."""
    if data is None:
        ir, vi = _synthetic_pairs(tmp_path / "data")
        data = {"pairs": [{"ir": str(ir), "vi": str(vi)}], "crop": 48, "repeat": 2, "num_workers": 0}
    return {
        "variant": "ld-lite", "teacher": str(teacher), "device": "cpu", "out_dir": str(tmp_path / "run"),
        "data": data, "loss": {"weights": DISTILL_ONLY}, "optim": {"batch_size": 2, "epochs": 1, "steps_per_epoch": 2},
        **top,
    }


def _write(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def _train(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of one ``ldfusion train``, checked to be at most one line."""
    code = train_main([*argv, "-q"])
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return code, err


@pytest.fixture
def no_training(monkeypatch):
    """Refusals that must come before any work: building the trainer fails the test."""
    import ldfusion.training.cli as train_cli

    monkeypatch.setattr(train_cli, "Trainer", lambda *a, **k: pytest.fail("the trainer was built before the refusal"))


# --- outputs onto inputs ------------------------------------------------------------------


def test_a_new_run_into_an_earlier_runs_folder_needs_resume_or_overwrite(tmp_path, random_weights, capsys, monkeypatch):
    """Without --resume, a second run replaced last.pt, model.pt and config.yaml without a word and
    left the earlier run's later epoch_*.pt beside its own: a forgotten --resume lost a long run."""
    config = _write(tmp_path / "train.yaml", _distill_config(tmp_path, random_weights["ld-lite"], save_every=1))
    assert _train(["--config", str(config), "--epochs", "2"], capsys)[0] == 0
    earlier = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()}
    assert {"last.pt", "model.pt", "config.yaml", "epoch_0001.pt", "epoch_0002.pt"} <= set(earlier)

    import ldfusion.training.cli as train_cli

    with monkeypatch.context() as patch:
        patch.setattr(train_cli, "Trainer", lambda *a, **k: pytest.fail("the trainer was built before the refusal"))
        code, err = _train(["--config", str(config), "--epochs", "1"], capsys)
    assert code == 2 and "holds an earlier run (config.yaml, epoch_0001.pt, epoch_0002.pt, last.pt, ...)" in err
    assert {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()} == earlier
    assert _train(["--config", str(config), "--epochs", "1", "--overwrite"], capsys)[0] == 0
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["config.yaml", "epoch_0001.pt", "last.pt", "model.pt"]


def test_resuming_another_folders_checkpoint_into_a_folder_holding_a_run_needs_overwrite(tmp_path, random_weights, capsys):
    """`--resume A/last.pt --out B` replaced run B's last.pt, model.pt and config.yaml, exit 0."""
    config = _write(tmp_path / "train.yaml", _distill_config(tmp_path, random_weights["ld-lite"]))
    for name in ("a", "b"):
        assert _train(["--config", str(config), "--epochs", "1", "--out", str(tmp_path / name)], capsys)[0] == 0
    run_b = {path.name: path.read_bytes() for path in (tmp_path / "b").iterdir()}
    code, err = _train(["--config", str(config), "--epochs", "2", "--out", str(tmp_path / "b"), "--resume", str(tmp_path / "a" / "last.pt")], capsys)
    assert code == 2 and f"{tmp_path / 'b'} holds another run (config.yaml, last.pt, model.pt), which resuming {tmp_path / 'a' / 'last.pt'} there would replace" in err
    assert {path.name: path.read_bytes() for path in (tmp_path / "b").iterdir()} == run_b
    # Into a new folder, or a checkpoint of the folder's own run: as before.
    assert _train(["--config", str(config), "--epochs", "2", "--out", str(tmp_path / "c"), "--resume", str(tmp_path / "a" / "last.pt")], capsys)[0] == 0
    assert _train(["--config", str(config), "--epochs", "2", "--out", str(tmp_path / "b"), "--resume", str(tmp_path / "b" / "last.pt")], capsys)[0] == 0


def test_a_run_stopped_before_its_first_checkpoint_says_to_start_over(tmp_path, random_weights, capsys):
    """A Ctrl-C in the first epoch left only config.yaml: the next run was told to --resume, and
    --resume said "weights file not found: run/last.pt"."""
    config = _write(tmp_path / "train.yaml", _distill_config(tmp_path, random_weights["ld-lite"]))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("variant: ld-lite\n")
    code, err = _train(["--config", str(config), "--epochs", "1"], capsys)
    assert code == 2 and "holds the config.yaml of a run that saved no checkpoint (stopped in its first epoch); --overwrite to start over" in err
    code, err = _train(["--config", str(config), "--epochs", "1", "--resume"], capsys)
    assert code == 2 and "saved no checkpoint to resume (it stopped in its first epoch); start over there with --overwrite" in err
    assert _train(["--config", str(config), "--epochs", "1", "--overwrite"], capsys)[0] == 0


def test_resuming_a_run_that_has_done_its_epochs_is_refused(tmp_path, random_weights, capsys):
    """--resume --epochs 2 after 2 epochs trained nothing, exit 0, and rewrote model.pt and config.yaml."""
    config = _write(tmp_path / "train.yaml", _distill_config(tmp_path, random_weights["ld-lite"]))
    assert _train(["--config", str(config), "--epochs", "2"], capsys)[0] == 0
    before = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()}
    code, err = _train(["--config", str(config), "--epochs", "2", "--resume"], capsys)
    assert code == 2 and "last.pt has finished epoch 2 of this run; --epochs 2 leaves nothing to train" in err
    assert {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()} == before
    assert _train(["--config", str(config), "--epochs", "3", "--resume"], capsys)[0] == 0


@pytest.mark.parametrize("role", ["teacher", "init", "config"])
def test_train_refuses_to_write_over_its_config_teacher_or_init_weights(tmp_path, random_weights, capsys, no_training, role):
    out = tmp_path / "run"
    out.mkdir()
    config = _distill_config(tmp_path, random_weights["ld-lite"])
    if role == "teacher":  # the final model.pt would replace the teacher
        victim = Path(shutil.copy(random_weights["ld-lite"], out / "model.pt"))
        config["teacher"] = str(victim)
    elif role == "init":  # last.pt, after the first epoch
        victim = Path(shutil.copy(random_weights["ld-lite"], out / "last.pt"))
        config["init"] = str(victim)
    config_file = _write(out / "config.yaml" if role == "config" else tmp_path / "train.yaml", config)
    if role == "config":
        victim = config_file
    before = victim.read_bytes()
    code, err = _train(["--config", str(config_file)], capsys)
    assert code == 2
    assert f"writing {victim} would overwrite the input" in err
    assert victim.read_bytes() == before


def test_a_hard_link_to_the_teacher_among_the_kept_epochs_is_refused(tmp_path, random_weights, capsys, no_training):
    out = tmp_path / "run"
    out.mkdir()
    teacher = Path(shutil.copy(random_weights["ld-lite"], tmp_path / "teacher.pt"))
    os.link(teacher, out / "epoch_0002.pt")  # another name for the teacher, written after epoch 2
    config = _write(tmp_path / "train.yaml", _distill_config(tmp_path, teacher, save_every=2))
    code, err = _train(["--config", str(config), "--epochs", "3"], capsys)
    assert code == 2 and "epoch_0002.pt would overwrite the input" in err and str(teacher) in err


def test_files_written_are_those_a_run_writes(tmp_path, random_weights):
    from ldfusion.training.trainer import files_written

    config = from_dict(TrainConfig, _distill_config(tmp_path, random_weights["ld-lite"], save_every=2))
    config = replace(config, optim=replace(config.optim, epochs=5))
    Trainer(config).fit()
    written = sorted(path for path in (tmp_path / "run").iterdir())
    assert written == sorted(files_written(config))


# --- videos ---------------------------------------------------------------------------------


def _clip(path: Path, frames: int, rate: float = 30, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """A small H.264 clip of ``frames`` random (width, height) images, in the container ``path``'s suffix names."""
    rng = np.random.default_rng(seed)
    with VideoWriter(path, rate, preset="ultrafast") as writer:
        for _ in range(frames):
            writer.write_image(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    return path


def test_videos_at_different_frame_rates_are_refused(tmp_path):
    ir, vi = _clip(tmp_path / "ir.mp4", 6, rate=10), _clip(tmp_path / "vi.mp4", 6, rate=30)
    with pytest.raises(DataError, match=r"ir.mp4 runs at 10 fps and .*vi.mp4 at 30 fps"):
        load_video_pairs(VideoSource(str(ir), str(vi), every=1))


def test_one_video_given_for_both_cameras_is_refused(tmp_path):
    clip = _clip(tmp_path / "both.mp4", 4)
    os.link(clip, tmp_path / "alias.mp4")
    for other in (clip, tmp_path / "alias.mp4"):
        with pytest.raises(DataError, match="the infrared and visible videos are the same file"):
            load_video_pairs(VideoSource(str(clip), str(other), every=1))


def test_videos_of_different_lengths_are_refused_unless_max_frames_cuts_both(tmp_path):
    ir, vi = _clip(tmp_path / "ir.mp4", 6, seed=1), _clip(tmp_path / "vi.mp4", 8, seed=2)
    with pytest.raises(DataError, match=r"ir.mp4 has 6 frames and .*vi.mp4 8 frames"):
        load_video_pairs(VideoSource(str(ir), str(vi), every=1))
    # max_frames beyond the shorter clip: it ended before the cap, the other did not.
    with pytest.raises(DataError, match=r"ir.mp4 has 6 frames and .*vi.mp4 at least 7 frames"):
        load_video_pairs(VideoSource(str(ir), str(vi), every=1, max_frames=7))
    pairs = load_video_pairs(VideoSource(str(ir), str(vi), every=2, max_frames=3))
    assert [pair.name for pair in pairs] == ["vi#0", "vi#2", "vi#4"]
    assert pairs[0].ir.shape == (48, 64) and pairs[0].visible.shape == (48, 64, 3)


def test_a_frame_size_change_mid_clip_is_one_line_naming_the_clip(tmp_path, random_weights, capsys):
    # Two MPEG-TS streams of different sizes, one after the other: the decoder follows the change.
    first, second = _clip(tmp_path / "a.ts", 4, seed=1), _clip(tmp_path / "b.ts", 4, size=(80, 64), seed=2)
    ir = tmp_path / "ir.ts"
    ir.write_bytes(first.read_bytes() + second.read_bytes())
    vi = _clip(tmp_path / "vi.ts", 8, seed=3)
    data = {"videos": [{"ir": str(ir), "vi": str(vi), "every": 1}], "crop": 32, "num_workers": 0}
    config = _write(tmp_path / "train.yaml", _distill_config(tmp_path, random_weights["ld-lite"], data))
    code, err = _train(["--config", str(config)], capsys)
    assert code == 2
    assert f"{ir}: frame 4 is 80x64, but the clip starts at 64x48" in err
    assert not (tmp_path / "run" / "config.yaml").exists()


# --- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("override, message", [
    ("optim.gamma=-0.5", "optim.gamma (the learning rate's factor at each milestone) must lie in (0, 1]; got -0.5"),
    ("optim.gamma=0", "must lie in (0, 1]; got 0.0"),
    ("optim.gamma=1000", "must lie in (0, 1]; got 1000.0"),
    ("save_every=-1", "save_every must be 0 (only last.pt) or positive; got -1"),
    ("optim.betas=[0.9, 1.0]", "optim.betas must both lie in [0, 1); got [0.9, 1.0]"),
    ("optim.betas=[-0.1, 0.999]", "optim.betas must both lie in [0, 1); got [-0.1, 0.999]"),
    (f"seed={2**70}", f"seed must lie in 0..{2**63 - 1}; got {2**70}"),
    ("seed=-1", "seed must lie in 0.."),
    ("data.num_workers=-1", "num_workers must be 0 (load in the training process) or positive; got -1"),
    ("data.videos=[{ir: a.mp4, vi: b.mp4, max_frames: -1}]", "max_frames must be 0 (no limit) or positive; got -1"),
    ("optim.grad_clip=-1", "optim.grad_clip must be 0 (off) or a positive norm; got -1.0"),
])
def test_values_out_of_range_are_one_line(tmp_path, random_weights, capsys, no_training, override, message):
    config = _write(tmp_path / "train.yaml", _distill_config(tmp_path, random_weights["ld-lite"]))
    code, err = _train(["--config", str(config), "--set", override], capsys)
    assert code == 2 and message in err


def test_exclude_names_that_match_no_pair_are_named(tmp_path):
    ir, vi = _synthetic_pairs(tmp_path / "data")
    assert [pair.name for pair in load_folder_pairs(FolderSource(str(ir), str(vi), exclude=("1",)))] == ["0", "2", "3"]
    with pytest.raises(DataError) as exc:
        load_folder_pairs(FolderSource(str(ir), str(vi), exclude=("1", "7", "3.png")))
    assert "exclude names that match no pair: '3.png', '7' (names are file stems without the extension, such as '0')" in str(exc.value)


def test_a_diverged_run_is_one_line_saying_what_to_change(tmp_path, random_weights, capsys):
    """lr 1e30 made the loss NaN: an unforeseen FloatingPointError (exit 1) with a torch warning."""
    config = _write(tmp_path / "train.yaml", _distill_config(tmp_path, random_weights["ld-lite"]))
    code, err = _train(["--config", str(config), "--set", "optim.lr=1e30"], capsys)
    assert code == 2
    assert "the loss is not finite at step" in err and "lower optim.lr (now 1e+30)" in err


# --- crop -----------------------------------------------------------------------------------


def test_a_crop_beyond_what_reflection_pads_is_refused_before_anything_is_written(tmp_path, random_weights, capsys):
    config = _distill_config(tmp_path, random_weights["ld-lite"])  # 80x72 images
    config["data"]["crop"] = 144
    code, err = _train(["--config", str(_write(tmp_path / "train.yaml", config))], capsys)
    assert code == 2
    assert "data.crop 144 is too large for the smallest training image, 0 (80x72)" in err and "up to a crop of 143" in err
    assert not (tmp_path / "run").exists()


def test_the_largest_crop_reflection_can_pad_is_made(tmp_path):
    ir, vi = _synthetic_pairs(tmp_path / "data")
    data = DataConfig(pairs=(FolderSource(str(ir), str(vi)),), crop=143, affine=False)
    sample = PairedDataset(load_folder_pairs(data.pairs[0]), data)[0]
    assert sample["ir"].shape == (1, 143, 143) and sample["vi_y"].shape == (1, 143, 143)


# --- resume ---------------------------------------------------------------------------------


def test_resume_refuses_another_optimizer_and_takes_the_configs_betas(tmp_path, random_weights, capsys):
    out = tmp_path / "run"
    config = str(_write(tmp_path / "train.yaml", _distill_config(tmp_path, random_weights["ld-lite"])))
    assert _train(["--config", config], capsys)[0] == 0
    first = (out / "last.pt").read_bytes()
    code, err = _train(["--config", config, "--epochs", "2", "--resume", "--set", "optim.optimizer=lbfgs"], capsys)
    assert code == 2
    assert f"{out / 'last.pt'}: cannot resume with optim.optimizer lbfgs: this run was trained with adam" in err
    assert (out / "last.pt").read_bytes() == first
    # New betas are used, and recorded, from the resumed epoch on.
    assert _train(["--config", config, "--epochs", "2", "--resume", "--set", "optim.betas=[0.5, 0.9]"], capsys)[0] == 0
    resumed = load_checkpoint(out / "last.pt")
    assert resumed.training["epoch"] == 2
    assert tuple(resumed.training["optimizer"]["param_groups"][0]["betas"]) == (0.5, 0.9)
    assert resumed.config["optim"]["betas"] == [0.5, 0.9]
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["betas"] == [0.5, 0.9]


def test_resume_takes_the_configs_lbfgs_settings_and_a_longer_history(tmp_path, random_weights):
    raw = _distill_config(tmp_path, random_weights["ld-lite"])
    raw["optim"] |= {"optimizer": "lbfgs", "lr": 1.0, "warmup": False, "milestones": [], "lbfgs_iterations": 3, "lbfgs_history": 2}
    config = from_dict(TrainConfig, raw)
    Trainer(config).fit()
    longer = replace(config, optim=replace(config.optim, epochs=2, lbfgs_iterations=4, lbfgs_history=6))
    trainer = Trainer(longer)
    trainer.resume(tmp_path / "run" / "last.pt")
    group = trainer.optimizer.param_groups[0]
    assert (group["max_iter"], group["history_size"]) == (4, 6)
    trainer.fit()  # the stored history, made for 2 pairs, would be indexed past its end
    assert load_checkpoint(tmp_path / "run" / "last.pt").training["epoch"] == 2
