"""Do the loss tests notice when the loss stops being the authors'? A mutation check.

Each mutation is a one-line source edit to ``ldfusion/losses.py`` or ``ldfusion/backbones.py``
of the kind a refactor could slip in (a swapped prompt, a missing normalisation, a feature
read before its ReLU). For each, a fresh copy of the repository gets the edit and the loss
tests run against it; a mutation is *caught* when they fail. The anchor text of every
mutation must occur exactly once in its file, or the script stops before running anything:
a list that no longer applies cleanly fails loudly instead of rotting.

    PYTHONPATH=. python scripts/loss_mutation_check.py              # all mutations
    PYTHONPATH=. python scripts/loss_mutation_check.py --list
    PYTHONPATH=. python scripts/loss_mutation_check.py --only vgg-pre-relu --jobs 2

Exit status: 0 when every mutation is caught, 1 when one is missed, 2 when a mutation does
not apply or the unmutated copy fails its own tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
COPIED = ("ldfusion", "tests", "configs", "pyproject.toml")  # what the loss tests need
LOSSES, BACKBONES = "ldfusion/losses.py", "ldfusion/backbones.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    old: str  # must occur exactly once in the file, on one line
    new: str
    what: str


MUTATIONS = (
    # The changes of issue 16, which the earlier tests let through.
    Mutation("vgg-pre-relu", BACKBONES, '"relu4_2": 22}', '"relu4_2": 21}', "VGG conv4_2 read before its ReLU"),
    Mutation("swapped-prompts", LOSSES, "[prompts.objective, prompts.visible, prompts.infrared]",
             "[prompts.objective, prompts.infrared, prompts.visible]", "visible and infrared prompts swapped"),
    Mutation("no-clip-mean-std", BACKBONES, "images = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)",
             "images = images", "CLIP input without its mean/std normalisation"),
    Mutation("clip-grad-cut", BACKBONES, "return self.model.encode_image(images).float()",
             "return self.model.encode_image(images).float().detach()", "no gradient through CLIP (VGG only)"),
    Mutation("sim-weight", LOSSES, "sim: float = 6.0", "sim: float = 5.0", "similarity weight 6 -> 5"),
    Mutation("vgg-imagenet-norm", BACKBONES, "normalize: bool = False  #", "normalize: bool = True  #",
             "VGG input normalised with ImageNet mean/std"),
    Mutation("source-patch-embeddings", LOSSES, "vi_emb.repeat(self.patch.count, 1), ir_emb.repeat(self.patch.count, 1)",
             "self.clip.encode_images(vi_patch), self.clip.encode_images(ir_patch)",
             "patch term against source-patch embeddings, not whole-image ones"),
    Mutation("entropy-either", LOSSES, ") & (entropy_bits(ir_patch)", ") | (entropy_bits(ir_patch)",
             "a patch kept when either source has detail, not both"),
    Mutation("no-unit-before-diff", LOSSES, "f, v, i = unit(fused), unit(visible), unit(infrared)",
             "f, v, i = fused, visible, infrared", "image embeddings differenced without normalisation"),
    Mutation("mean-over-kept", LOSSES, "return (per_patch * keep.to(per_patch.dtype)).mean()",
             "return (per_patch * keep.to(per_patch.dtype)).sum() / keep.sum().clamp_min(1)",
             "patch term averaged over kept patches only"),
    Mutation("unfrozen-backbones", BACKBONES, "parameter.requires_grad_(False)", "parameter.requires_grad_(True)",
             "CLIP and VGG parameters require grad"),
    # Two the earlier tests caught already (flat patches, the direction loss's zero).
    Mutation("keep-flat-patches", LOSSES, "entropy_threshold: float = 6.0", "entropy_threshold: float = 0.0",
             "entropy threshold 6 bits -> 0"),
    Mutation("vi-term-ir-direction", LOSSES, "F.cosine_similarity(f - v, vi_text_dir.expand_as(f)",
             "F.cosine_similarity(f - v, ir_text_dir.expand_as(f)", "visible term against the infrared text direction"),
    # More of the same kind.
    Mutation("gelu-for-openai", BACKBONES, "quick_gelu: bool = True", "quick_gelu: bool = False",
             "CLIP built with GELU by default"),
    Mutation("text-no-unit-before-diff", LOSSES, "objective, visible, infrared = unit(clip.encode_texts(",
             "objective, visible, infrared = (clip.encode_texts(", "text embeddings differenced without normalisation"),
    Mutation("perceptual-min", LOSSES, "torch.maximum(vi_feats[name], ir_feats[name])",
             "torch.minimum(vi_feats[name], ir_feats[name])", "VGG target the element-wise min, not max"),
    Mutation("fewer-patches", LOSSES, "count: int = 32", "count: int = 16", "16 patches instead of 32"),
    Mutation("clip-train-mode", BACKBONES, "return super().train(False)  # always frozen",
             "return super().train(mode)  # always frozen", "CLIP follows train() out of eval mode"),
)


class MutationError(Exception):
    pass


def mutate(source: str, mutation: Mutation) -> str:
    """``source`` with the mutation applied; MutationError unless it applies cleanly to one line."""
    if "\n" in mutation.old or "\n" in mutation.new:
        raise MutationError(f"{mutation.name}: a mutation edits one line")
    found = source.count(mutation.old)
    if found != 1:
        raise MutationError(f"{mutation.name}: anchor {mutation.old!r} occurs {found} times in {mutation.path}, not once")
    return source.replace(mutation.old, mutation.new)


def check_all_apply(mutations: tuple[Mutation, ...], root: Path) -> None:
    for mutation in mutations:
        mutate((root / mutation.path).read_text(), mutation)


@dataclass(frozen=True)
class Outcome:
    mutation: Mutation | None  # None: the unmutated copy
    returncode: int
    first_failure: str
    seconds: float

    @property
    def caught(self) -> bool:
        return self.returncode != 0


def run_tests(mutation: Mutation | None, tests: list[str], timeout: float) -> Outcome:
    """Copy the repository, apply ``mutation`` and run ``tests`` there (stopping at the first failure)."""
    with tempfile.TemporaryDirectory(prefix="loss_mutant_") as tmp:
        copy = Path(tmp) / "repo"
        copy.mkdir()
        for name in COPIED:
            source = REPO_ROOT / name
            if source.is_dir():
                shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, copy / name)
        if mutation is not None:
            target = copy / mutation.path
            target.write_text(mutate(target.read_text(), mutation))
        command = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider"]
        start = time.monotonic()
        try:
            result = subprocess.run(command, cwd=copy, env=_env(copy), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Outcome(mutation, -1, f"timed out after {timeout:.0f} s", time.monotonic() - start)
        return Outcome(mutation, result.returncode, _first_failure(result.stdout + result.stderr), time.monotonic() - start)


def _env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy)
    return env


def _first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" - ")[0].split("::")[-1]
    return ""


def format_table(outcomes: list[Outcome]) -> str:
    rows = [("mutation", "file", "result", "first failing test", "s")]
    for outcome in outcomes:
        m = outcome.mutation
        result = "caught" if outcome.caught else "MISSED"
        rows.append((m.name, Path(m.path).name, result, outcome.first_failure or "-", f"{outcome.seconds:.0f}"))
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    caught = sum(outcome.caught for outcome in outcomes)
    lines.append(f"caught {caught} of {len(outcomes)}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loss_mutation_check",
        description="Apply one-line mutations to a copy of the loss and report which the loss tests catch.",
    )
    parser.add_argument("--tests", nargs="+", default=["tests/test_losses.py"], help="test files to run against each mutant")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations (see --list)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per test run (default 900)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mutations = MUTATIONS
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in MUTATIONS})
        if unknown:
            print(f"loss_mutation_check: unknown mutation(s) {', '.join(unknown)}; see --list", file=sys.stderr)
            return 2
        mutations = tuple(m for m in MUTATIONS if m.name in args.only)
    if args.list:
        for m in mutations:
            print(f"{m.name:26s} {m.path:24s} {m.what}")
        return 0
    try:
        check_all_apply(mutations, REPO_ROOT)
    except MutationError as exc:
        print(f"loss_mutation_check: {exc}", file=sys.stderr)
        return 2
    baseline = run_tests(None, args.tests, args.timeout)
    if baseline.caught:
        print(f"loss_mutation_check: the unmutated copy fails its tests ({baseline.first_failure or baseline.returncode})", file=sys.stderr)
        return 2
    print(f"unmutated copy passes ({baseline.seconds:.0f} s); testing {len(mutations)} mutations", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        outcomes = list(pool.map(lambda m: run_tests(m, args.tests, args.timeout), mutations))
    print(format_table(outcomes))
    return 0 if all(outcome.caught for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
