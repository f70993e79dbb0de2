"""Checkpoint I/O: our format, the authors' formats, and refusing unsafe or broken files."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from ldfusion.checkpoint import load_checkpoint, load_model, save_checkpoint
from ldfusion.errors import CheckpointError
from ldfusion.networks import build_network
from ldfusion.variants import get_variant


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("variant", ["ld-lite", "ldfusion"])
def test_our_format_round_trips_with_variant_and_config(tmp_path, variant):
    net = build_network(get_variant(variant))
    path = save_checkpoint(tmp_path / "m.pt", net, config={"note": "hello", "lr": 0.1})
    ckpt = load_checkpoint(path)
    assert ckpt.spec == get_variant(variant)
    assert ckpt.config == {"note": "hello", "lr": 0.1}
    assert _same_weights(load_model(path), net)


def test_authors_enc_dec_pair_loads_from_folder_or_either_file(tmp_path):
    net = build_network(get_variant("ldfusion"))
    torch.save(net.encoder.state_dict(), tmp_path / "Enc_final.pt")
    torch.save(net.decoder.state_dict(), tmp_path / "Dec_final.pt")
    for given in (tmp_path, tmp_path / "Enc_final.pt", tmp_path / "Dec_final.pt"):
        loaded = load_model(given)
        assert loaded.spec.name == "ldfusion"
        assert _same_weights(loaded, net)


def test_a_pair_with_a_missing_partner_names_it(tmp_path):
    torch.save(build_network(get_variant("ldfusion")).encoder.state_dict(), tmp_path / "Enc_final.pt")
    with pytest.raises(CheckpointError, match="Dec_final.pt is missing"):
        load_model(tmp_path / "Enc_final.pt")


def test_plain_state_dict_variant_is_inferred(tmp_path):
    net = build_network(get_variant("ld-lite"))
    torch.save(net.state_dict(), tmp_path / "final.pt")
    assert load_model(tmp_path / "final.pt").spec.name == "ld-lite"


def test_mismatched_state_dict_names_missing_and_extra_keys(tmp_path):
    state = build_network(get_variant("ld-lite")).state_dict()
    state.pop("decoder.model_up.0.weight")
    state["decoder.surprise"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "broken.pt", variant="ld-lite")
    message = str(info.value)
    assert "broken.pt" in message and "decoder.model_up.0.weight" in message and "decoder.surprise" in message
    assert "\n" not in message


def test_unknown_layout_reports_the_closest_variant(tmp_path):
    state = build_network(get_variant("ld-lite")).state_dict()
    state["decoder.model_up.0.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"matches no known variant; closest is 'ld-lite': 1 wrong shape: "):
        load_model(tmp_path / "odd.pt")


@pytest.mark.parametrize("variant", [None, "ld-lite"])
def test_integer_weights_are_refused_naming_the_keys(tmp_path, variant):
    """A checkpoint of int64 tensors loaded (load_state_dict converts) and fused to flat grey."""
    state = {key: value.to(torch.int64) for key, value in build_network(get_variant("ld-lite")).state_dict().items()}
    torch.save(state, tmp_path / "ints.pt")
    with pytest.raises(CheckpointError, match=r"ints\.pt: .*wrong types: encoder\.\S+ int64 where float32 belongs"):
        load_model(tmp_path / "ints.pt", variant=variant)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip", b"hello"])  # "hello": KeyError inside torch
def test_corrupt_file_is_a_clear_error_naming_the_file(tmp_path, content):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(path)


def test_truncated_real_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", build_network(get_variant("ld-lite")))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="m.pt"):
        load_checkpoint(path)


class _Exploit:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_carrying_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="evil.pt: refused to load"):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="weights file not found: .*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_newer_format_version_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", build_network(get_variant("ld-lite")))
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="version 99 is newer"):
        load_checkpoint(path)


def test_a_raw_pickle_is_refused_in_one_line_without_torchs_protocol_warning(tmp_path):
    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with warnings.catch_warnings(record=True) as caught, pytest.raises(CheckpointError, match="raw.pt: not a readable PyTorch checkpoint"):
        warnings.simplefilter("always")
        load_checkpoint(path)
    assert not [w for w in caught if "Detected pickle protocol" in str(w.message)]
