"""scripts/loss_mutation_check.py: its mutations still apply, and a stale one fails loudly.

(Running the mutants takes minutes; this only checks that the list has not rotted. It lives
apart from tests/test_losses.py, which the script runs against each mutant.)
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("loss_mutation_check", REPO_ROOT / "scripts" / "loss_mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_every_mutation_applies_to_exactly_one_line(check):
    assert len(check.MUTATIONS) >= 13
    assert len({m.name for m in check.MUTATIONS}) == len(check.MUTATIONS)
    for mutation in check.MUTATIONS:
        source = (REPO_ROOT / mutation.path).read_text()
        mutated = check.mutate(source, mutation)
        changed = [(a, b) for a, b in zip(source.splitlines(), mutated.splitlines()) if a != b]
        assert len(changed) == 1 and len(source.splitlines()) == len(mutated.splitlines()), mutation.name


def test_a_stale_anchor_stops_the_check(check, capsys):
    stale = check.Mutation("stale", "ldfusion/losses.py", "no such line in the loss", "x", "gone")
    with pytest.raises(check.MutationError, match="occurs 0 times"):
        check.mutate((REPO_ROOT / stale.path).read_text(), stale)
    assert check.main(["--only", "no-such-mutation"]) == 2
    assert "unknown mutation" in capsys.readouterr().err
