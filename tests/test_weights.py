"""The weights registry: names, environment variables, the cache, and download checks (offline)."""

from __future__ import annotations

import pytest

from ldfusion.errors import CheckpointError
from ldfusion.networks import build_network
from ldfusion.checkpoint import save_checkpoint
from ldfusion.variants import get_variant
from ldfusion.weights import REGISTRY, RemoteFile, WeightsEntry, fetch_into_cache, resolve_model, resolve_weights_path, sha256_of

# Fused Y of the bundled `default` against LD-Lite's, per held-out ldlite_test pair (dB).
MIN_AGREEMENT_DB = 35.0  # the target; 37.9 and 36.8 measured


@pytest.fixture
def published(tmp_path):
    """A weights file 'published' at a file:// URL, with its sha256."""
    path = save_checkpoint(tmp_path / "published" / "final.pt", build_network(get_variant("ld-lite")))
    return path, sha256_of(path)


def _entry(url: str, sha: str | None) -> WeightsEntry:
    return WeightsEntry(name="test-lite", variant="ld-lite", env_var="LDFUSION_TEST_WEIGHTS", files=(RemoteFile("final.pt", url, sha),))


def test_download_into_cache_checks_the_hash(tmp_path, published):
    path, sha = published
    cached = fetch_into_cache(_entry(path.as_uri(), sha), root=tmp_path / "cache")
    assert cached == tmp_path / "cache" / "test-lite" / "final.pt"
    assert sha256_of(cached) == sha


def test_wrong_hash_is_refused_and_nothing_is_cached(tmp_path, published):
    path, _ = published
    with pytest.raises(CheckpointError, match="does not match the pinned"):
        fetch_into_cache(_entry(path.as_uri(), "0" * 64), root=tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob("*.pt"))


def test_a_prefilled_cache_is_used_without_any_url(tmp_path, published):
    path, sha = published
    cache = tmp_path / "cache" / "test-lite"
    cache.mkdir(parents=True)
    (cache / "final.pt").write_bytes(path.read_bytes())
    unreachable = "file:///nonexistent/final.pt"
    assert fetch_into_cache(_entry(unreachable, sha), root=tmp_path / "cache") == cache / "final.pt"


def test_corrupted_cache_entry_is_fetched_again(tmp_path, published):
    path, sha = published
    cache = tmp_path / "cache" / "test-lite"
    cache.mkdir(parents=True)
    (cache / "final.pt").write_bytes(b"bitrot")
    assert sha256_of(fetch_into_cache(_entry(path.as_uri(), sha), root=tmp_path / "cache")) == sha


def test_unreachable_url_explains_the_offline_alternatives(tmp_path):
    with pytest.raises(CheckpointError, match="set LDFUSION_TEST_WEIGHTS=.*, or give a file.s path in place of the name"):
        fetch_into_cache(_entry("file:///nonexistent/final.pt", None), root=tmp_path / "cache")


def test_registry_name_reads_the_environment_variable(monkeypatch, published):
    path, _ = published
    monkeypatch.setenv(REGISTRY["ld-lite"].env_var, str(path))
    assert resolve_weights_path("ld-lite") == path
    assert resolve_model("ld-lite").spec.name == "ld-lite"


def test_registry_name_uses_the_cache_folder(monkeypatch, tmp_path, published):
    path, _ = published
    monkeypatch.delenv(REGISTRY["ld-lite"].env_var, raising=False)
    monkeypatch.setenv("LDFUSION_CACHE", str(tmp_path / "cache"))
    replacement = WeightsEntry(
        name="ld-lite", variant="ld-lite", env_var=REGISTRY["ld-lite"].env_var,
        files=(RemoteFile("final.pt", path.as_uri(), sha256_of(path)),),
    )
    monkeypatch.setitem(REGISTRY, "ld-lite", replacement)
    assert resolve_weights_path("ld-lite") == tmp_path / "cache" / "ld-lite" / "final.pt"


def test_unknown_name_is_a_clear_error():
    with pytest.raises(CheckpointError, match="neither a file nor one of") as error:
        resolve_weights_path("no-such-weights")
    assert "auto (bundled weights chosen for the device)" in str(error.value)  # the name most users want was not offered


def test_the_authors_release_is_pinned():
    assert REGISTRY["ld-lite"].files[0].sha256 == "38099dbf221a951609439692f6693e8283d49e118cb2576906fda9df6ea454ea"


def test_shared_ld_lite_matches_the_pinned_hash(ldlite_weights):
    assert sha256_of(ldlite_weights) == REGISTRY["ld-lite"].files[0].sha256


def test_bundled_default_agrees_with_its_teacher_on_held_out_pairs(shared_data, ldlite_weights):
    """The bundled weights are the ones MODEL_CARD.md describes: close to LD-Lite on pairs
    never seen in training (scripts/teacher_agreement.py measures all twelve)."""
    from ldfusion.imageio import pair_folders, read_pair
    from ldfusion.inference import Fuser, FuserOptions, to_chw_float, to_y_batch
    from ldfusion.losses import psnr

    options = FuserOptions(device="cpu")
    student, teacher = Fuser.from_weights("default", options=options), Fuser.from_weights(str(ldlite_weights), options=options)
    values = []
    for pair in pair_folders(shared_data / "pairs/ldlite_test/ir", shared_data / "pairs/ldlite_test/vi"):
        visible, ir = read_pair(pair)
        vi_y, ir = to_y_batch(visible), to_chw_float(ir)[None]  # (1, 1, H, W) each
        values.append(float(psnr(student.fuse_y(vi_y, ir), teacher.fuse_y(vi_y, ir))[0]))
    assert len(values) == 2
    assert min(values) >= MIN_AGREEMENT_DB


def test_what_auto_runs_on_the_cpu_meets_the_quality_bar(shared_data, ldlite_weights, capsys):
    """`weights: auto` on the CPU (the shipped int8 default, on OpenVINO) against LD-Lite on
    all twelve held-out pairs: the bar that lets auto choose it (>= 33 dB mean, >= 30 each)."""
    pytest.importorskip("openvino")
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "teacher_agreement.py"
    spec = importlib.util.spec_from_file_location("teacher_agreement", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    status = module.main(["--student", "auto", "--backend", "auto", "--teacher", str(ldlite_weights)])
    out = capsys.readouterr().out
    assert "12 pairs" in out, out
    assert status == 0, out
