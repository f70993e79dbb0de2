"""`ldfusion train`: a short real run, resume, distillation, and config errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from ldfusion.checkpoint import load_checkpoint
from ldfusion.cli.fuse import main as fuse_main
from ldfusion.training.cli import main as train_main
from ldfusion.training.trainer import learning_rate
from ldfusion.training.config import OptimConfig
from tests.tiny_backbones import make_random_vgg, make_tiny_clip


def _synthetic_pairs(root: Path, count: int = 4, size=(72, 80)) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    for k in range(count):
        vi = cv2.GaussianBlur(rng.integers(0, 256, (*size, 3), dtype=np.uint8), (5, 5), 0)
        ir = cv2.GaussianBlur(rng.integers(0, 256, size, dtype=np.uint8), (5, 5), 0)
        (root / "vi").mkdir(parents=True, exist_ok=True)
        (root / "ir").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "vi" / f"{k}.png"), vi)
        cv2.imwrite(str(root / "ir" / f"{k}.png"), ir)
    return root / "ir", root / "vi"


def _write_config(path: Path, ir: Path, vi: Path, out: Path, clip, vgg, **top) -> Path:
    config = {
        "variant": "ld-lite",
        "out_dir": str(out),
        "device": "cpu",
        "data": {"pairs": [{"ir": str(ir), "vi": str(vi)}], "crop": 48, "repeat": 2, "num_workers": 0},
        "loss": {
            "clip": {"model": clip.model, "pretrained": clip.pretrained, "model_config": clip.model_config},
            "vgg": {"weights": vgg.weights},
            "patch": {"count": 2},
        },
        "optim": {"batch_size": 2, "epochs": 1, "steps_per_epoch": 2},
        **top,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backbones")
    return make_tiny_clip(folder), make_random_vgg(folder)


def test_learning_rate_warms_up_then_decays_at_milestones():
    optim = OptimConfig(lr=1.0, milestones=(2, 3), gamma=0.5)
    assert learning_rate(optim, 1, 0, 4) == pytest.approx(0.25)
    assert learning_rate(optim, 1, 3, 4) == pytest.approx(1.0)
    assert learning_rate(optim, 2, 0, 4) == pytest.approx(1.0)
    assert learning_rate(optim, 3, 0, 4) == pytest.approx(0.5)
    assert learning_rate(optim, 4, 0, 4) == pytest.approx(0.25)


@pytest.mark.shared_data
def test_short_training_run_on_msrs_writes_a_checkpoint_that_fuse_loads(tmp_path, shared_data, backbones):
    msrs = shared_data / "pairs" / "msrs"
    out = tmp_path / "run"
    config = _write_config(tmp_path / "train.yaml", msrs / "ir", msrs / "vi", out, *backbones)
    assert train_main(["--config", str(config), "-q"]) == 0
    for name in ("config.yaml", "last.pt", "model.pt"):
        assert (out / name).is_file(), name
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["data"]["crop"] == 48 and resolved["loss"]["weights"]["sim"] == 6.0
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.training["epoch"] == 1 and ckpt.training["step"] == 2
    name = sorted((msrs / "ir").iterdir())[0].name
    fused_dir = tmp_path / "fused"
    code = fuse_main(["--ir", str(msrs / "ir" / name), "--vi", str(msrs / "vi" / name), "--out", str(fused_dir), "--weights", str(out / "model.pt"), "-q"])
    assert code == 0
    assert cv2.imread(str(fused_dir / (Path(name).stem + ".png"))).shape == (480, 640, 3)


@pytest.mark.parametrize("out", ["a: b", "[x]", "2024", "yes"])
def test_flags_are_taken_as_typed_not_read_as_yaml(tmp_path, backbones, out):
    """--out was passed on as the override 'out_dir=VALUE', which YAML read: a folder named
    "a: b" or "[x]" was refused as a mapping or a list."""
    from ldfusion.training.cli import build_parser, config_from_args

    ir, vi = _synthetic_pairs(tmp_path / "data")
    config = _write_config(tmp_path / "train.yaml", ir, vi, tmp_path / "run", *backbones)
    args = build_parser().parse_args(["--config", str(config), "--out", str(tmp_path / out), "--epochs", "3", "--device", "cpu"])
    resolved = config_from_args(args)
    assert (resolved.out_dir, resolved.optim.epochs, resolved.device) == (str(tmp_path / out), 3, "cpu")


def test_an_empty_out_is_named_as_the_flag(tmp_path, capsys):
    """It was "override 'out_dir=' has no value", about a key the user never typed."""
    with pytest.raises(SystemExit) as stop:
        train_main(["--config", str(tmp_path / "train.yaml"), "--out", ""])
    assert stop.value.code == 2 and "argument --out: the path is empty" in capsys.readouterr().err


def test_a_wrong_out_or_resume_file_is_refused_before_the_backbones_load(tmp_path, backbones, monkeypatch, capsys):
    """CLIP and VGG take minutes to load (or fail to download offline): a mistake in a path
    must be named before that."""
    import ldfusion.training.cli as train_cli

    monkeypatch.setattr(train_cli, "Trainer", lambda *a, **k: pytest.fail("the trainer was built before the paths were checked"))
    ir, vi = _synthetic_pairs(tmp_path / "data")
    a_file, not_a_state = tmp_path / "a_file", tmp_path / "notes.txt"
    a_file.write_text("x")
    not_a_state.write_text("hello")
    config = _write_config(tmp_path / "train.yaml", ir, vi, tmp_path / "run", *backbones)
    assert train_main(["--config", str(config), "-q", "--out", str(a_file)]) == 2
    assert f"--out {a_file} is a file, not a folder" in capsys.readouterr().err
    assert train_main(["--config", str(config), "-q", "--resume", str(not_a_state)]) == 2
    assert "notes.txt: not a readable PyTorch checkpoint" in capsys.readouterr().err


def test_resume_continues_from_the_last_epoch(tmp_path, backbones):
    ir, vi = _synthetic_pairs(tmp_path / "data")
    out = tmp_path / "run"
    config = _write_config(tmp_path / "train.yaml", ir, vi, out, *backbones)
    assert train_main(["--config", str(config), "-q"]) == 0
    first = load_checkpoint(out / "last.pt")
    assert train_main(["--config", str(config), "-q", "--epochs", "2", "--resume"]) == 0
    second = load_checkpoint(out / "last.pt")
    assert (first.training["epoch"], second.training["epoch"]) == (1, 2)
    assert second.training["step"] == 4
    changed = any(not torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)
    assert changed


def test_distillation_from_a_teacher_trains_without_clip(tmp_path, random_weights):
    ir, vi = _synthetic_pairs(tmp_path / "data")
    out = tmp_path / "run"
    config = {
        "variant": "ld-lite",
        "teacher": str(random_weights["ld-lite"]),
        "out_dir": str(out),
        "device": "cpu",
        "data": {"pairs": [{"ir": str(ir), "vi": str(vi)}], "crop": 48, "repeat": 2, "num_workers": 0},
        "loss": {"weights": {"sim": 0, "prompt_global": 0, "prompt_patch": 0, "perceptual": 0, "distill": 1}},
        "optim": {"batch_size": 2, "epochs": 1, "steps_per_epoch": 3},
    }
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train_main(["--config", str(path), "-q"]) == 0
    assert load_checkpoint(out / "model.pt").spec.name == "ld-lite"


@pytest.mark.parametrize(
    "text,message",
    [
        ("variant: ld-lite\ndata: {pairs: [{ir: a, vi: b}]}\noptim: {lr: fast}\n", "optim.lr: expected a number"),
        ("variant: ld-lite\ndata: {pairs: [{ir: a, vi: b}]}\nloss: {weight: {}}\n", "unknown key(s) weight"),
        ("variant: nope\ndata: {pairs: [{ir: a, vi: b}]}\n", "variant must be one of"),
        ("data: {pairs: [{ir: a, vi: b}]\n", "malformed YAML at line"),
        ("optim: {lr: 0.1}\n", "missing required key(s) data"),
    ],
)
def test_malformed_config_is_a_one_line_error(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert train_main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


def test_missing_partner_in_training_data_names_the_file(tmp_path, random_weights, capsys):
    ir, vi = _synthetic_pairs(tmp_path / "data")
    (vi / "2.png").unlink()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "variant": "ld-lite", "teacher": str(random_weights["ld-lite"]), "device": "cpu",
        "out_dir": str(tmp_path / "run"),
        "data": {"pairs": [{"ir": str(ir), "vi": str(vi)}], "num_workers": 0},
        "loss": {"weights": {"sim": 0, "prompt_global": 0, "prompt_patch": 0, "perceptual": 0}},
    }))
    assert train_main(["--config", str(config)]) == 2
    assert "2.png" in capsys.readouterr().err


def test_torchrun_ddp_on_cpu_trains_and_writes_one_checkpoint(tmp_path, random_weights):
    """Two processes under torchrun (gloo on the CPU) train one model; rank 0 writes it."""
    import subprocess
    import sys

    ir, vi = _synthetic_pairs(tmp_path / "data", count=4)
    out = tmp_path / "run"
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump({
        "variant": "ld-lite", "teacher": str(random_weights["ld-lite"]), "device": "cpu", "out_dir": str(out),
        "data": {"pairs": [{"ir": str(ir), "vi": str(vi)}], "crop": 48, "repeat": 2, "num_workers": 0},
        "loss": {"weights": {"sim": 0, "prompt_global": 0, "prompt_patch": 0, "perceptual": 0}},
        "optim": {"batch_size": 2, "epochs": 1, "steps_per_epoch": 2},
    }))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "ldfusion.training.cli", "--config", str(config), "-q"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.training["step"] == 2 and (out / "model.pt").is_file()


def test_feature_hints_match_a_same_layout_teacher(tmp_path, random_weights):
    from ldfusion.config import from_dict
    from ldfusion.training.config import TrainConfig
    from ldfusion.training.trainer import Trainer

    ir, vi = _synthetic_pairs(tmp_path / "data")
    config = from_dict(TrainConfig, {
        "variant": "ld-lite", "teacher": str(random_weights["ld-lite"]), "device": "cpu", "out_dir": str(tmp_path / "run"),
        "data": {"pairs": [{"ir": str(ir), "vi": str(vi)}], "crop": 48, "repeat": 2, "num_workers": 0, "noise_std": 0.0},
        "loss": {"weights": {"sim": 0, "prompt_global": 0, "prompt_patch": 0, "perceptual": 0, "distill_features": 1.0}},
        "optim": {"batch_size": 2, "epochs": 1, "steps_per_epoch": 2},
    })
    trainer = Trainer(config)
    batch = next(iter(trainer.loader))
    terms = trainer.compute_loss(batch)
    assert terms["hints"] > 0
    torch.testing.assert_close(terms["total"], terms["distill"] + terms["hints"])
    # A student that is the teacher has nothing left to learn from the hints.
    trainer.model.load_state_dict(trainer.teacher.state_dict())
    with torch.no_grad():
        again = trainer.compute_loss(batch)
    assert float(again["hints"]) == pytest.approx(0.0, abs=1e-8)
    assert float(again["distill"]) == pytest.approx(0.0, abs=1e-5)


def _hint_trainer(tmp_path, teacher: Path, hints: dict):
    from ldfusion.config import from_dict
    from ldfusion.training.config import TrainConfig
    from ldfusion.training.trainer import Trainer

    ir, vi = _synthetic_pairs(tmp_path / "data")
    config = from_dict(TrainConfig, {
        "variant": "ld-lite", "teacher": str(teacher), "device": "cpu", "out_dir": str(tmp_path / "run"),
        "data": {"pairs": [{"ir": str(ir), "vi": str(vi)}], "crop": 48, "repeat": 2, "num_workers": 0, "noise_std": 0.0},
        "loss": {"weights": {"sim": 0, "prompt_global": 0, "prompt_patch": 0, "perceptual": 0, "distill_features": 1.0},
                 "hints": hints},
        "optim": {"batch_size": 2, "epochs": 2, "steps_per_epoch": 1},
    })
    trainer = Trainer(config)
    return trainer, next(iter(trainer.loader))


def test_layer_hints_cover_every_norm_residual_block_and_the_logits(tmp_path, random_weights):
    from ldfusion.training.hints import hint_points

    trainer, _ = _hint_trainer(tmp_path, random_weights["ld-lite"], {"points": "layers"})
    names = hint_points(trainer.model, "layers")
    # Per content encoder: 4 norms + 2 residual blocks with 2 norms each; decoder: 3 norms + logits.
    assert len(names) == 2 * (4 + 2 * 3) + 3 + 1
    assert {"encoder.content_encoder2.model.14", "decoder.model_up.7", "decoder.model_up.10"} <= set(names)


def test_layer_hints_record_the_activation_before_the_relu(tmp_path, random_weights):
    from ldfusion.training.hints import tap

    trainer, batch = _hint_trainer(tmp_path, random_weights["ld-lite"], {"points": "layers"})
    with torch.no_grad(), tap(trainer.model, ["encoder.content_encoder1.model.2"]) as features:
        trainer.model(batch["vi_y"], batch["ir"])
    # Instance-normalised and recorded before the in-place ReLU: about half is negative.
    assert float((features["encoder.content_encoder1.model.2"] < 0).float().mean()) > 0.2


def _forced_logits(trainer, batch, forced: bool):
    """The student's recorded output logits, teacher-forced or not."""
    from ldfusion.training.hints import tap

    teacher = trainer.teacher_outputs(batch)
    with tap(trainer.model, trainer.hint_names, replace=teacher.features if forced else None) as student_features:
        trainer.model(batch["vi_y"], batch["ir"])
    return student_features["decoder.model_up.10"], teacher.features["decoder.model_up.10"]


def test_teacher_forced_hints_feed_each_layer_the_teachers_input(tmp_path, random_weights):
    trainer, batch = _hint_trainer(tmp_path, random_weights["ld-lite"], {"points": "layers", "teacher_forced_epochs": 1})
    # Give the student only the teacher's last conv. Teacher-forced, that conv sees the
    # teacher's activations, so its logits agree although every other layer is random.
    last_conv = {k: v for k, v in trainer.teacher.state_dict().items() if k.startswith("decoder.model_up.10.")}
    trainer.model.load_state_dict(last_conv, strict=False)
    forced, target = _forced_logits(trainer, batch, forced=True)
    torch.testing.assert_close(forced, target, atol=1e-4, rtol=1e-4)
    free, _ = _forced_logits(trainer, batch, forced=False)
    assert float((free.detach() - target).abs().mean()) > 0.01


def test_teacher_forced_hints_keep_each_layers_gradient_local(tmp_path, random_weights):
    trainer, batch = _hint_trainer(tmp_path, random_weights["ld-lite"], {"points": "layers", "teacher_forced_epochs": 1})
    trainer.model.zero_grad()
    student, target = _forced_logits(trainer, batch, forced=True)
    torch.nn.functional.mse_loss(student, target).backward()
    # The last hint reaches only the last conv, not the layers before it.
    first_conv = trainer.model.encoder.content_encoder1.model[1].weight
    assert first_conv.grad is None or float(first_conv.grad.abs().max()) == 0.0
    assert float(trainer.model.decoder.model_up[10].weight.grad.abs().max()) > 0
    # The trainer's forced epochs use it: epoch 1 is forced, epoch 2 is not.
    with torch.no_grad():
        assert float(trainer.compute_loss(batch, epoch=1)["distill"]) == pytest.approx(0.0, abs=1e-5)
        assert float(trainer.compute_loss(batch, epoch=2)["distill"]) > 0.01


def test_hint_config_names_a_bad_point_set(tmp_path, random_weights, capsys):
    ir, vi = _synthetic_pairs(tmp_path / "data")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "variant": "ld-lite", "teacher": str(random_weights["ld-lite"]), "device": "cpu", "out_dir": str(tmp_path / "run"),
        "data": {"pairs": [{"ir": str(ir), "vi": str(vi)}], "crop": 48, "num_workers": 0},
        "loss": {"weights": {"sim": 0, "prompt_global": 0, "prompt_patch": 0, "perceptual": 0, "distill_features": 1.0},
                 "hints": {"points": "everything"}},
    }))
    assert train_main(["--config", str(path)]) != 0
    assert "loss.hints.points must be one of" in capsys.readouterr().err


def test_teacher_forced_hints_refuse_a_teacher_of_another_layout(tmp_path, random_weights, capsys):
    ir, vi = _synthetic_pairs(tmp_path / "data")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "variant": "ld-lite", "teacher": str(random_weights["ldfusion"]), "device": "cpu", "out_dir": str(tmp_path / "run"),
        "data": {"pairs": [{"ir": str(ir), "vi": str(vi)}], "num_workers": 0},
        "loss": {"weights": {"sim": 0, "prompt_global": 0, "prompt_patch": 0, "perceptual": 0, "distill_features": 1.0},
                 "hints": {"points": "layers", "teacher_forced_epochs": 1}},
    }))
    assert train_main(["--config", str(path)]) == 2
    assert "teacher-forced feature hints need a student with the teacher's layout" in capsys.readouterr().err


def _fast_student_trainer(tmp_path, teacher: Path, **fields):
    from ldfusion.config import from_dict
    from ldfusion.training.config import TrainConfig
    from ldfusion.training.trainer import Trainer

    ir, vi = _synthetic_pairs(tmp_path / "data")
    config = from_dict(TrainConfig, {
        "variant": "fast", "teacher": str(teacher), "device": "cpu", "out_dir": str(tmp_path / "run"),
        "data": {"pairs": [{"ir": str(ir), "vi": str(vi)}], "crop": 40, "repeat": 2, "num_workers": 0, "noise_std": 0.0},
        "loss": {"weights": {"sim": 0, "prompt_global": 0, "prompt_patch": 0, "perceptual": 0, "distill_features": 1.0},
                 "hints": {"points": "layers"}},
        "optim": {"batch_size": 2, "epochs": 1, "steps_per_epoch": 1, "optimizer": "lbfgs", "lr": 1.0,
                  "lbfgs_iterations": 3, "warmup": False, "milestones": []},
        **fields,
    })
    trainer = Trainer(config)
    return trainer, next(iter(trainer.loader))


def test_a_student_of_another_layout_gets_hints_through_adapters(tmp_path, random_weights):
    trainer, batch = _fast_student_trainer(tmp_path, random_weights["ld-lite"])
    names = trainer.hint_names
    # Every norm, residual block and the logits, plus the content codes.
    assert {"encoder.content_encoder1.model.2", "encoder.content_encoder2", "decoder.model_up.7", "decoder.model_up.10"} <= set(names)
    # Channels differ everywhere but at the one-channel logits: an adapter per other point.
    assert len(trainer.hint_adapters.convs) == len(names) - 1
    adapter_params = {id(p) for p in trainer.hint_adapters.parameters()}
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert adapter_params and adapter_params <= optimised
    with torch.no_grad():
        before = trainer.compute_loss(batch)
    assert float(before["hints"]) > 0
    after = trainer.train_step(batch)
    assert after["total"] < float(before["total"])


def test_hint_adapters_survive_a_resume(tmp_path, random_weights):
    from ldfusion.training.trainer import Trainer

    trainer, batch = _fast_student_trainer(tmp_path, random_weights["ld-lite"])
    trainer.fit()
    again = Trainer(trainer.config)
    again.resume(tmp_path / "run" / "last.pt")
    for (name, mine), theirs in zip(trainer.hint_adapters.state_dict().items(), again.hint_adapters.state_dict().values()):
        torch.testing.assert_close(mine, theirs, msg=name)


def test_lbfgs_lowers_the_distillation_loss_on_a_batch(tmp_path, random_weights):
    trainer, batch = _hint_trainer(tmp_path, random_weights["ld-lite"], {"points": "layers"})
    config = trainer.config
    from dataclasses import replace

    from ldfusion.training.trainer import Trainer

    lbfgs = Trainer(replace(config, optim=replace(config.optim, optimizer="lbfgs", lr=1.0, warmup=False, lbfgs_iterations=5)))
    assert isinstance(lbfgs.optimizer, torch.optim.LBFGS)
    with torch.no_grad():
        before = float(lbfgs.compute_loss(batch)["total"])
    teacher_calls = []
    lbfgs.teacher.register_forward_hook(lambda *_: teacher_calls.append(1))
    after = lbfgs.train_step(batch)
    assert after["total"] < 0.9 * before
    assert lbfgs.step == 1
    # Many evaluations of the batch, one teacher forward.
    assert len(teacher_calls) == 1


def test_lbfgs_refuses_several_processes(tmp_path, random_weights):
    from dataclasses import replace

    from ldfusion.errors import ConfigError
    from ldfusion.training.trainer import DistInfo, Trainer

    trainer, _ = _hint_trainer(tmp_path, random_weights["ld-lite"], {"points": "layers"})
    config = replace(trainer.config, optim=replace(trainer.config.optim, optimizer="lbfgs"))
    with pytest.raises(ConfigError, match="single process"):
        Trainer(config, DistInfo(rank=0, local_rank=0, world_size=2))


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "optim.epochs must be at least 1; got 0"),
    ("batch_size", -2, "optim.batch_size must be at least 1; got -2"),
    ("lr", 0.0, "optim.lr must be positive; got 0.0"),
])
def test_optim_config_names_the_one_value_that_is_wrong(field, value, message):
    with pytest.raises(ValueError) as exc:
        OptimConfig(**{field: value})
    assert str(exc.value) == message


def test_optim_config_names_an_unknown_optimizer():
    with pytest.raises(ValueError, match="optim.optimizer must be one of"):
        OptimConfig(optimizer="sgd")


def test_pruning_to_the_teachers_own_width_gives_the_teacher(random_weights):
    from ldfusion.checkpoint import load_model
    from ldfusion.networks import build_network
    from ldfusion.training.prune import plan_channels, prune_into
    from ldfusion.variants import get_variant

    teacher = load_model(random_weights["ld-lite"])
    student = build_network(get_variant("ld-lite")).eval()
    prune_into(student, teacher, plan_channels(student, teacher))
    vi, ir = torch.rand(1, 1, 40, 56), torch.rand(1, 1, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(student(vi, ir), teacher(vi, ir))


def test_pruning_keeps_per_level_widths_and_refuses_a_wider_level(random_weights):
    from ldfusion.checkpoint import load_model
    from ldfusion.networks import build_network
    from ldfusion.errors import ConfigError
    from ldfusion.training.prune import plan_channels, prune_into
    from ldfusion.variants import VariantSpec

    teacher = load_model(random_weights["ld-lite"])
    # LD-Lite's widths at 1/4 and 1/8, narrower near full resolution (MODEL_CARD.md, the fast card)
    narrow = VariantSpec(name="narrow", content_dim=8, n_downsample=3, n_residual=2, encoder_widths=(4, 16, 32, 64), decoder_widths=(64, 16, 4))
    student = build_network(narrow).eval()
    kept = plan_channels(student, teacher)
    prune_into(student, teacher, kept)
    # The coarse levels have the teacher's width: their weights are the teacher's own.
    mine, theirs = dict(student.named_parameters()), dict(teacher.named_parameters())
    for name in ("encoder.content_encoder1.model.7.weight", "encoder.content_encoder2.model.13.block.1.weight", "decoder.model_up.0.weight"):
        torch.testing.assert_close(mine[name], theirs[name])
    assert mine["decoder.model_up.3.weight"].shape == (64, 16, 5, 5) and kept["decoder.model_up.4"].numel() == 16
    wider = VariantSpec(name="wide", content_dim=8, n_downsample=3, n_residual=2, encoder_widths=(8, 16, 48, 64))
    with pytest.raises(ConfigError, match="no wider than its teacher at every level"):
        plan_channels(build_network(wider), teacher)


def test_a_pruned_student_is_hinted_on_the_teachers_kept_channels(tmp_path, random_weights):
    from ldfusion.training.hints import tap

    trainer, batch = _fast_student_trainer(tmp_path, random_weights["ld-lite"], prune_from_teacher=True)
    assert len(trainer.hint_adapters.convs) == 0 and len(trainer.hint_names) == 2 * (4 + 2 * 3) + 3 + 1
    first_norm = "encoder.content_encoder1.model.2"
    teacher = trainer.teacher_outputs(batch)
    assert teacher.features[first_norm].shape[1] == 4  # 4 of the teacher's 8 channels
    with torch.no_grad(), tap(trainer.model, [first_norm]) as student_features:
        trainer.model(batch["vi_y_noisy"], batch["ir_noisy"])
    # The first conv reads the one input channel: its kept channels are the teacher's exactly.
    torch.testing.assert_close(student_features[first_norm], teacher.features[first_norm], atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        before = float(trainer.compute_loss(batch)["total"])
    assert trainer.train_step(batch)["total"] < before


def test_prune_from_teacher_needs_a_teacher():
    from ldfusion.config import from_dict
    from ldfusion.errors import ConfigError
    from ldfusion.training.config import TrainConfig

    with pytest.raises(ConfigError, match="prune_from_teacher needs a teacher"):
        from_dict(TrainConfig, {"variant": "fast", "prune_from_teacher": True, "data": {"pairs": [{"ir": "a", "vi": "b"}]},
                                "loss": {"weights": {"sim": 1.0}}})
