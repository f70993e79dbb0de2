"""CPU export and backends: exact rewrites, OpenVINO parity, the export cache, fallback, auto choices."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch

from ldfusion.backends import choose_backend, float_precision
from ldfusion.checkpoint import save_checkpoint
from ldfusion.errors import ConfigError
from ldfusion.export import ExportCore, exported_path, rewrite_for_export, zero_biases_before_instance_norm
from ldfusion.inference import Fuser, FuserOptions
from ldfusion.networks import build_network, pad_input
from ldfusion.variants import VARIANTS, get_variant
from ldfusion.weights import CPU_AUTO_WEIGHTS, choose_weights

# Sizes users meet: odd, below the network's minimum side, not multiples of 8.
ODD_SIZES = [(5, 7), (17, 33), (81, 95)]


def _net(variant: str, seed: int = 0):
    torch.manual_seed(seed)
    net = build_network(get_variant(variant)).eval()
    # Biases as large as LD-Lite's first conv's (hundreds of times the spread of the output):
    # rewrite 1 must remove them exactly.
    with torch.no_grad():
        net.encoder.content_encoder1.model[1].bias.uniform_(-3, 3)
    return net


def _inputs(height: int, width: int, batch: int = 2, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, height, width, generator=generator), torch.rand(batch, 1, height, width, generator=generator)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_export_rewrites_keep_the_output(variant):
    net = _net(variant)
    rewritten = ExportCore(rewrite_for_export(net))
    for height, width in ODD_SIZES:
        vi, ir = _inputs(height, width)
        with torch.no_grad():
            expected = net(vi, ir)
            got = rewritten(pad_input(net.spec, vi), pad_input(net.spec, ir))[:, :, :height, :width]
        # Rewrite 2 drops a factor 1 + 1/(2N) of the LayerNorm, N = C*H*W of a decoder
        # stage: about 1e-3 at the 16x16 minimum, 1e-7 at 640x512. 1e-4 is 1/40 of a uint8 step.
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # The original network is left as it was.
    assert float(net.encoder.content_encoder1.model[1].bias.detach().abs().max()) > 1.0


def test_every_conv_bias_before_an_instance_norm_is_zeroed():
    net = _net("ld-lite")
    # Per content encoder: the 7x7 conv, three stride-2 convs, two convs in each of 2 residual blocks.
    assert zero_biases_before_instance_norm(net) == 2 * (1 + 3 + 2 * 2)
    assert float(net.encoder.content_encoder2.model[13].block[5].bias.detach().abs().max()) == 0.0
    # The decoder's transposed convs feed LayerNorms, which do not cancel a per-channel bias.
    assert float(net.decoder.model_up[0].bias.detach().abs().max()) > 0.0


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_openvino_agrees_with_torch(variant):
    pytest.importorskip("openvino")
    net = _net(variant)
    torch_fuser = Fuser(net, FuserOptions(device="cpu", backend="torch"))
    ov_fuser = Fuser(net, FuserOptions(device="cpu", backend="openvino", precision="f32"))
    assert ov_fuser.backend == "openvino" and ov_fuser.cpu_network is not None
    for height, width in ODD_SIZES:
        vi, ir = _inputs(height, width)
        expected = torch_fuser.fuse_y(vi, ir)
        got = ov_fuser.fuse_y(vi, ir)
        assert got.shape == (2, 1, height, width)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # Batch members stay apart.
    assert not torch.allclose(got[0], got[1])


def test_two_openvino_streams_run_calls_at_once_with_the_same_outputs():
    """``cpu_streams=2``: two calls started before either ends (file mode keeps two in
    flight) give exactly what one call at a time gives, each its own inputs' output."""
    pytest.importorskip("openvino")
    net = _net("ld-lite")
    one = Fuser(net, FuserOptions(device="cpu", backend="openvino", precision="f32"))
    two = Fuser(net, FuserOptions(device="cpu", backend="openvino", precision="f32", cpu_streams=2))
    assert (one.overlaps_calls, two.overlaps_calls) == (False, True)
    inputs = [_inputs(33, 47, batch=1, seed=seed) for seed in (1, 2, 3)]
    expected = [one.fuse_y(vi, ir) for vi, ir in inputs]
    first, second = two.start_fuse_y(*inputs[0]), two.start_fuse_y(*inputs[1])
    vi, ir = inputs[0]
    vi.fill_(0.5), ir.fill_(0.5)  # the call copied its inputs: the caller may reuse them at once
    assert len(two.cpu_network._idle[(1, 1, 33, 47)]) == 0  # both requests busy
    torch.testing.assert_close(second.result(), expected[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(first.result(), expected[0], atol=1e-5, rtol=0)
    assert len(two.cpu_network._idle[(1, 1, 33, 47)]) == 2  # back in the pool
    torch.testing.assert_close(two.fuse_y(*inputs[2]), expected[2], atol=1e-5, rtol=0)
    assert not torch.allclose(expected[0], expected[1])
    compiled = two.cpu_network._compiled[(1, 1, 33, 47)]
    assert compiled.get_property("NUM_STREAMS") == 2 and one.cpu_network._compiled[(1, 1, 33, 47)].get_property("NUM_STREAMS") == 1
    with pytest.raises(ConfigError, match="cpu_streams must be at least 1"):
        FuserOptions(cpu_streams=0)


def test_openvino_network_names_mismatched_inputs():
    pytest.importorskip("openvino")
    fuser = Fuser(_net("fast"), FuserOptions(device="cpu", backend="openvino"))
    with pytest.raises(ValueError, match="must both be"):  # the network's own check (fuse_y checks before it)
        fuser.start_fuse_y(torch.rand(1, 1, 20, 20), torch.rand(1, 1, 20, 24))


def test_fast_variant_shapes():
    spec = get_variant("fast")
    net = build_network(spec).eval()
    vi, ir = _inputs(81, 95, batch=1)
    with torch.no_grad():
        codes = net.encode(vi, ir)
    # Half LD-Lite's width: 4 -> 32 channels at 1/8, the decoder 64 -> 32 -> 16 -> 8 -> 1.
    assert codes.content_vi.shape == (1, 32, 10, 11)
    assert [m.out_channels for m in net.decoder.model_up if isinstance(m, torch.nn.ConvTranspose2d)] == [32, 16, 8]
    assert net.decoder.model_up[10].kernel_size == (3, 3)
    assert net(vi, ir).shape == (1, 1, 81, 95)
    lite = sum(p.numel() for p in build_network(get_variant("ld-lite")).parameters())
    assert sum(p.numel() for p in net.parameters()) < 0.3 * lite
    with pytest.raises(ConfigError, match="out_kernel must be odd"):
        type(spec)(name="bad", content_dim=4, n_downsample=3, n_residual=1, out_kernel=4)


def test_widths_default_to_doubling_and_are_checked():
    lite = get_variant("ld-lite")
    assert lite.content_widths == (8, 16, 32, 64) and lite.up_widths == (64, 32, 16) and lite.decoder_dim == 128
    spec = type(lite)(name="w", content_dim=8, n_downsample=2, n_residual=0, encoder_widths=[3, 5, 7], decoder_widths=[6, 2])
    assert spec.encoder_widths == (3, 5, 7) and spec.decoder_dim == 14  # a checkpoint's lists become tuples
    net = build_network(spec).eval()
    assert net(*_inputs(20, 28, batch=1)).shape == (1, 1, 20, 28)
    for bad in ({"encoder_widths": (3, 5)}, {"encoder_widths": (3, 0, 7)}, {"decoder_widths": (6, True)},
                {"decoder_widths": (6, 1000)}, {"encoder_widths": "wide"}):
        with pytest.raises(ConfigError, match="_widths must be"):
            type(lite)(name="bad", content_dim=8, n_downsample=2, n_residual=0, **bad)


# --- the export cache ---------------------------------------------------------------------


def test_export_is_cached_beside_the_weights_and_rebuilt_when_they_change(tmp_path):
    pytest.importorskip("openvino")
    from ldfusion.export import ensure_exported

    net = _net("fast")
    weights = save_checkpoint(tmp_path / "student.pt", net)
    # Exports of other weights files in the folder, named alike, are not this file's: kept.
    neighbours = [tmp_path / "student.v2.0123456789abcdef.v1.xml", tmp_path / "student.0123456789abcdef.v1.int8.xml"]
    for path in neighbours:
        path.write_text("")
    first, built = ensure_exported(net, weights, "openvino")
    assert built and first.parent == tmp_path and first.with_suffix(".bin").is_file()
    again, built_again = ensure_exported(net, weights, "openvino")
    assert again == first and not built_again
    with torch.no_grad():
        net.decoder.model_up[0].weight.add_(0.01)
    save_checkpoint(weights, net)
    second, rebuilt = ensure_exported(net, weights, "openvino")
    assert rebuilt and second != first
    assert not first.exists() and not first.with_suffix(".bin").exists()  # the stale export is gone
    assert all(path.exists() for path in neighbours)
    # The Fuser runs the current export: it agrees with the changed weights.
    fuser = Fuser.from_weights(weights, options=FuserOptions(device="cpu", backend="openvino", precision="f32"))
    vi, ir = _inputs(40, 56)
    with torch.no_grad():
        torch.testing.assert_close(fuser.fuse_y(vi, ir), net(vi, ir), atol=1e-4, rtol=0)


def test_read_only_weights_export_into_the_cache(tmp_path, monkeypatch):
    folder = tmp_path / "shared"
    folder.mkdir()
    weights = save_checkpoint(folder / "w.pt", _net("fast"))
    monkeypatch.setenv("LDFUSION_CACHE", str(tmp_path / "cache"))
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        # Even as root, a folder marked read-only (a shared data set) is not written.
        assert exported_path(weights, "openvino").parent == tmp_path / "cache" / "exported"
    finally:
        folder.chmod(0o755)
    assert exported_path(weights, "onnx").parent == folder
    assert exported_path(weights, "openvino", int8=True).name.endswith(".int8.xml")


def test_bundled_weights_export_into_the_cache(tmp_path, monkeypatch):
    from ldfusion.weights import BUNDLED_DIR

    monkeypatch.setenv("LDFUSION_CACHE", str(tmp_path))
    path = exported_path(BUNDLED_DIR / "default.pt", "openvino", bundled_dir=BUNDLED_DIR)
    assert path.parent == tmp_path / "exported"


def test_shipped_exports_are_found_in_the_package_and_only_when_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("LDFUSION_CACHE", str(tmp_path / "cache"))
    package = tmp_path / "bundled"
    weights = save_checkpoint(package / "w.pt", _net("fast"))
    cached = exported_path(weights, "openvino", True, bundled_dir=package)
    assert cached.parent == tmp_path / "cache" / "exported"
    shipped = package / cached.name
    shipped.write_text("<net/>")  # an .xml without its .bin is not a shipped export
    assert exported_path(weights, "openvino", True, bundled_dir=package) == cached
    shipped.with_suffix(".bin").write_bytes(b"")
    assert exported_path(weights, "openvino", True, bundled_dir=package) == shipped
    # Other weights bytes name another file: the shipped one is not used for them.
    save_checkpoint(weights, _net("fast", seed=1))
    assert exported_path(weights, "openvino", True, bundled_dir=package).parent == tmp_path / "cache" / "exported"


def test_the_shipped_int8_default_is_current():
    """scripts/bundle_int8.py was run for these default.pt bytes and this export version, and
    no export of older weights or recipes ships beside it."""
    from ldfusion.backends import shipped_int8_export
    from ldfusion.export import stale_exports
    from ldfusion.weights import BUNDLED_DIR, CPU_AUTO_INT8

    assert CPU_AUTO_INT8 and CPU_AUTO_WEIGHTS == "default"
    shipped = shipped_int8_export(BUNDLED_DIR / "default.pt")
    assert shipped is not None, "run scripts/bundle_int8.py: default.pt or EXPORT_VERSION changed"
    assert stale_exports(BUNDLED_DIR / "default.pt", shipped) == []


def test_auto_on_the_cpu_runs_the_shipped_int8_default(caplog):
    pytest.importorskip("openvino")
    with caplog.at_level(logging.INFO, logger="ldfusion.backends"):
        fuser = Fuser.from_weights(None, options=FuserOptions(device="cpu"))
    assert fuser.backend == "openvino" and fuser.int8
    assert "int8 auto: on" in caplog.text
    out = fuser.fuse_y(*_inputs(81, 95))
    assert out.shape == (2, 1, 81, 95) and torch.isfinite(out).all()
    # Float where the user names the weights, turns int8 off, or runs PyTorch.
    assert not Fuser.from_weights("default", options=FuserOptions(device="cpu")).int8
    assert not Fuser.from_weights("auto", options=FuserOptions(device="cpu", int8=False)).int8
    assert Fuser.from_weights(None, options=FuserOptions(device="cpu", backend="torch")).backend == "torch"


def test_precision_auto_takes_bf16_only_for_int8_where_the_cpu_has_it(monkeypatch):
    pytest.importorskip("openvino")
    from ldfusion import backends

    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: True)
    assert backends.float_precision("auto", int8=True) == "bf16"
    assert backends.float_precision("auto", int8=False) == "f32"  # a float network agrees with PyTorch
    assert backends.float_precision("f32", int8=True) == "f32"
    assert backends.float_precision("bf16", int8=False) == "bf16"
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: False)
    assert backends.float_precision("auto", int8=True) == "f32"
    with pytest.raises(ConfigError, match="bf16 needs a CPU that computes bf16 natively"):
        backends.float_precision("bf16")
    with pytest.raises(ConfigError, match="precision must be one of auto, f32, bf16"):
        backends.float_precision("fp16")
    with pytest.raises(ConfigError, match="precision must be one of auto, f32, bf16"):
        FuserOptions(precision="fp16")
    with pytest.raises(ConfigError, match="precision bf16 is for the openvino backend .* runs on PyTorch on cpu in f32"):
        Fuser(_net("fast"), FuserOptions(device="cpu", backend="torch", precision="bf16"))
    assert Fuser(_net("fast"), FuserOptions(device="cpu", backend="torch", precision="f32")).precision is None  # what it runs


@pytest.mark.parametrize("weights, requested", [(None, "auto"), ("default", "auto"), (None, "f32"), ("default", "bf16")])
def test_the_compiled_network_computes_in_the_precision_chosen(weights, requested):
    """The hint reaches the compiled model, int8 or float. On a CPU with native bf16 OpenVINO
    would pick bf16 by itself, so a float network left without the hint would not agree with PyTorch."""
    ov = pytest.importorskip("openvino")
    from ldfusion.backends import cpu_has_native_bf16

    if requested == "bf16" and not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16")
    fuser = Fuser.from_weights(weights, options=FuserOptions(device="cpu", precision=requested))
    assert fuser.int8 == (weights is None)
    fuser.fuse_y(*_inputs(33, 47, batch=1))
    compiled = {c.get_property("INFERENCE_PRECISION_HINT") for c in fuser.cpu_network._compiled.values()}
    expected = float_precision(requested, fuser.int8)
    assert fuser.precision == expected
    assert compiled == {{"bf16": ov.Type.bf16, "f32": ov.Type.f32}[expected]}


def test_bf16_stays_close_to_pytorch():
    """``--precision bf16`` on a float network: near PyTorch, not equal (40-75 dB on smooth
    scenes with edges, as images are; random pixels would not exercise the norms)."""
    pytest.importorskip("openvino")
    from ldfusion.backends import cpu_has_native_bf16
    from ldfusion.export import parity_inputs
    from ldfusion.export import agreement_db

    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16")
    net = _net("ld-lite")
    vi, ir = parity_inputs(96, 128, torch.Generator().manual_seed(0))
    expected = Fuser(net, FuserOptions(device="cpu", backend="torch")).fuse_y(vi, ir)
    got = Fuser(net, FuserOptions(device="cpu", backend="openvino", precision="bf16")).fuse_y(vi, ir)
    assert 40 < agreement_db(expected, got) < 75


def test_auto_without_a_shipped_int8_export_runs_float(monkeypatch, caplog):
    pytest.importorskip("openvino")
    from ldfusion.backends import auto_int8
    from ldfusion.weights import BUNDLED_DIR

    with caplog.at_level(logging.INFO, logger="ldfusion.backends"):
        assert not auto_int8(True, BUNDLED_DIR / "fast.pt", torch.device("cpu"), "auto")
    assert "no int8 export ships for fast.pt" in caplog.text
    monkeypatch.setattr("ldfusion.weights.CPU_AUTO_INT8", False)
    assert not auto_int8(True, BUNDLED_DIR / "default.pt", torch.device("cpu"), "auto")


# --- backend choice and fallback ----------------------------------------------------------


def test_auto_falls_back_to_torch_without_openvino(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr("ldfusion.backends.openvino_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="ldfusion.backends"):
        assert choose_backend("auto", torch.device("cpu")) == "torch"
    assert "openvino is not installed" in caplog.text
    with pytest.raises(ConfigError, match="openvino is not installed"):
        choose_backend("openvino", torch.device("cpu"))
    # A Fuser asked for auto with a weights file still fuses, on PyTorch.
    weights = save_checkpoint(tmp_path / "w.pt", _net("fast"))
    fuser = Fuser.from_weights(weights, options=FuserOptions(device="cpu", backend="auto"))
    assert fuser.backend == "torch" and fuser.cpu_network is None
    assert fuser.fuse_y(*_inputs(17, 33)).shape == (2, 1, 17, 33)
    with pytest.raises(ConfigError, match="int8 runs on the openvino backend only"):
        Fuser.from_weights(weights, options=FuserOptions(device="cpu", backend="auto", int8=True))


def test_backend_choice_by_device():
    assert choose_backend("torch", torch.device("cpu")) == "torch"
    assert choose_backend("auto", torch.device("cuda")) == "torch"
    with pytest.raises(ConfigError, match="CPU only"):
        choose_backend("openvino", torch.device("cuda"))
    with pytest.raises(ConfigError, match="backend must be one of"):
        choose_backend("tensorrt", torch.device("cpu"))


def test_auto_weights_follow_the_device(caplog):
    with caplog.at_level(logging.INFO, logger="ldfusion.weights"):
        assert choose_weights(None, torch.device("cpu")) == CPU_AUTO_WEIGHTS
        assert choose_weights("auto", torch.device("cuda")) == "default"
    assert f"using {CPU_AUTO_WEIGHTS!r}" in caplog.text and "the device is the CPU" in caplog.text
    assert "the device is cuda" in caplog.text
    # Names and paths the user gives pass through.
    assert choose_weights("ld-lite", torch.device("cpu")) == "ld-lite"
    assert choose_weights("/some/file.pt", torch.device("cuda")) == "/some/file.pt"


def test_auto_weights_on_the_cpu_are_bundled_and_load():
    from ldfusion.weights import REGISTRY, resolve_model

    entry = REGISTRY[CPU_AUTO_WEIGHTS]
    assert entry.bundled, "auto must work offline: its CPU choice ships in the package"
    assert resolve_model(CPU_AUTO_WEIGHTS).spec.name == entry.variant


def test_passive_waiting_is_set_before_torch_loads():
    import subprocess
    import sys

    code = "import ldfusion, os, sys; import torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's own choice wins
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_network_threads_follow_the_environment(monkeypatch):
    from ldfusion.threads import available_cores, network_threads

    monkeypatch.delenv("LDFUSION_NETWORK_THREADS", raising=False)
    assert network_threads() == available_cores() >= 1
    monkeypatch.setenv("LDFUSION_NETWORK_THREADS", "1")
    assert network_threads() == 1
    monkeypatch.setenv("LDFUSION_NETWORK_THREADS", "zero")
    with pytest.raises(ConfigError, match="positive whole number"):
        network_threads()


# --- the command ---------------------------------------------------------------------------


def test_export_help(capsys):
    from ldfusion_cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--format" in out and "--int8" in out and "sha256" in out


def test_export_command_prints_parity(tmp_path, capsys):
    pytest.importorskip("openvino")
    from ldfusion.cli.export import main

    weights = save_checkpoint(tmp_path / "w.pt", _net("ld-lite"))
    assert main(["--weights", str(weights), "--format", "openvino", "-q"]) == 0
    out = capsys.readouterr().out
    assert "wrote:" in out
    parity = {line.split(": ")[0]: float(line.split(": ")[1].split(" dB")[0]) for line in out.splitlines() if line.startswith("parity")}
    assert len(parity) == 2 and all(name.endswith(", f32") and db > 80 for name, db in parity.items())
    assert main(["--weights", str(weights), "--format", "openvino", "-q"]) == 0
    assert "up to date:" in capsys.readouterr().out


def test_export_command_rejects_bad_combinations(tmp_path, capsys):
    from ldfusion.cli.export import main

    weights = save_checkpoint(tmp_path / "w.pt", _net("fast"))
    assert main(["--weights", str(weights), "--format", "onnx", "--int8"]) == 2
    assert "--int8 needs --format openvino" in capsys.readouterr().err
    assert main(["--weights", str(weights), "--int8"]) == 2
    assert "--calib-ir" in capsys.readouterr().err
    assert main(["--weights", str(tmp_path / "missing.pt")]) == 2
    assert "not found" in capsys.readouterr().err
    # The shipped int8 default is never deleted or rebuilt by --force.
    pytest.importorskip("openvino")
    assert main(["--weights", "default", "--int8", "--force", "--calib-ir", str(tmp_path), "--calib-vi", str(tmp_path)]) == 2
    assert "ships with ldfusion and is not rebuilt here" in capsys.readouterr().err
    assert main(["--weights", "default", "--int8", "-q"]) == 0  # no calibration images needed: it ships
    assert "up to date:" in capsys.readouterr().out


def test_int8_export_keeps_first_and_last_convs_and_norm_inputs_in_float(tmp_path):
    pytest.importorskip("nncf")
    from ldfusion.export import calibration_pairs, convert_openvino, float_layer_names, quantize_int8
    from ldfusion.imageio import write_image
    import numpy as np

    rng = np.random.default_rng(0)
    for folder in ("ir", "vi"):
        (tmp_path / folder).mkdir()
        for k in range(4):
            write_image(tmp_path / folder / f"{k}.png", (rng.random((48, 64)) * 255).astype(np.uint8))
    net = _net("fast")
    converted = convert_openvino(net)
    kept = float_layer_names(converted, ("first", "last"))
    # One first conv per encoder, and the output conv (depthwise + sum).
    assert len(kept) == 4
    quantized = quantize_int8(converted, calibration_pairs(tmp_path / "ir", tmp_path / "vi"))
    quantized_ops = [target.get_node() for op in quantized.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
                     for output in op.outputs() for target in output.get_target_inputs()]
    assert any(op.get_type_name() == "Convolution" for op in quantized_ops)  # the rest is int8
    assert not {op.get_friendly_name() for op in quantized_ops} & set(kept)
    assert not [op.get_friendly_name() for op in quantized_ops if op.get_type_name() == "MVN"]


def test_int8_without_an_export_says_how_to_make_one(tmp_path):
    pytest.importorskip("openvino")
    weights = save_checkpoint(tmp_path / "w.pt", _net("fast"))
    with pytest.raises(ConfigError, match="no int8 export of .* run `ldfusion export --weights"):
        Fuser.from_weights(weights, options=FuserOptions(device="cpu", backend="openvino", int8=True))


def test_openvino_leaves_the_threads_signal_stack_as_it_was():
    """Compiling pointed the calling thread's alternate signal stack at the compiled model's
    memory, and freeing a model put back the stack of the one compiled before it. With two
    networks (`export` checks f32 and bf16; a script comparing weights), once both were freed
    Python's handlers ran on freed memory: the next Ctrl-C crashed the process with SIGSEGV
    instead of raising KeyboardInterrupt (or silently wrote into the heap)."""
    pytest.importorskip("openvino")
    if not sys.platform.startswith("linux"):
        pytest.skip("sigaltstack is read through glibc")
    script = textwrap.dedent("""
        import ctypes, gc, os, signal, time, torch
        from ldfusion.inference import Fuser, FuserOptions
        from ldfusion.networks import build_network
        from ldfusion.variants import get_variant

        class Stack(ctypes.Structure):
            _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

        def signal_stack():
            stack = Stack()
            ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack))
            return stack.sp, stack.flags, stack.size

        before = signal_stack()
        fusers = [Fuser(build_network(get_variant("fast")).eval(), FuserOptions(device="cpu", backend="openvino", precision="f32"))
                  for _ in range(2)]
        for fuser in fusers:
            fuser.fuse_y(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32))
        during = signal_stack()
        del fuser, fusers
        gc.collect()
        print(before == during == signal_stack())
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            print("interrupted")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout.split()) == (0, ["True", "interrupted"]), done.stderr[-2000:]


def test_export_refuses_weights_whose_output_is_not_finite_and_writes_nothing(tmp_path, capsys):
    """Weights that overflow were exported with exit 0 and a parity of "nan dB"."""
    pytest.importorskip("openvino")
    from ldfusion.cli.export import main

    net = _net("fast")
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.mul_(1e30)
    weights = save_checkpoint(tmp_path / "huge.pt", net)
    assert main(["--weights", str(weights), "-q"]) == 2
    assert capsys.readouterr().err.strip() == f"ldfusion export: error: {weights}: the network output is not finite (NaN/inf) with these weights; they are broken"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.pt"]


def test_export_of_auto_names_what_auto_chooses(capsys):
    from ldfusion.cli.export import main

    assert main(["--weights", "auto"]) == 2
    assert capsys.readouterr().err.strip() == ("ldfusion export: error: --weights auto chooses weights per device when fusing; "
                                               "export the ones it chooses on the CPU: default --int8")


def test_a_folder_where_the_export_goes_is_named_and_nothing_is_left(tmp_path, capsys):
    """The error named the temporary folder's file, and a .bin was left without its .xml."""
    pytest.importorskip("openvino")
    from ldfusion.cli.export import main

    weights = save_checkpoint(tmp_path / "w.pt", _net("fast"))
    target = exported_path(weights, "openvino")
    target.mkdir()
    assert main(["--weights", str(weights), "-q"]) == 2
    assert capsys.readouterr().err.strip() == f"ldfusion export: error: {target} is a folder where the export is written; move it away"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["w.pt", target.name])


def test_an_export_made_just_now_that_disagrees_blames_the_weights_and_is_not_kept(tmp_path, capsys, ldlite_weights):
    """LD-Lite with one conv's weights times 1e38 exported to 55 dB: refused with "delete it",
    which made the same export again, and the rejected files stayed for fuse to use."""
    pytest.importorskip("openvino")
    from ldfusion.cli.export import main

    state = torch.load(ldlite_weights, map_location="cpu", weights_only=True)
    state["decoder.model_up.10.weight"] = state["decoder.model_up.10.weight"] * 1e38
    weights = tmp_path / "big.pt"
    torch.save(state, weights)
    assert main(["--weights", str(weights), "-q"]) == 2
    assert capsys.readouterr().err.strip().startswith(f"ldfusion export: error: {weights}: exported, the network disagrees with PyTorch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.pt"]
