#!/usr/bin/env bash
# Prepare what scripts/gpu_check.sh needs on a device machine, here, where the network is.
#
#   scripts/gpu_wheels.sh [--with-clip] [--base REV]
#
# The device image has Python 3.12, PyTorch 2.11 (CUDA 13), opencv-python-headless,
# onnxruntime, numpy and pytest, and no network. This downloads the missing wheels
# (cp312, manylinux, no dependencies resolved: the list is complete for what gpu_check
# imports) into the git-ignored .whl/, and copies the LD-Lite weights and the shortest
# M3SVD pair from ../shared/data into the git-ignored .devcarry/data/ (laid out like
# ../shared/data, so the tests' shared_data fixture finds it). Then pass both to the
# device tool: carry [".whl", ".devcarry"], command "bash scripts/gpu_check.sh".
#
# The device tool carries at most 64 MiB with the working tree. Measured 2026-11-26:
# core wheels 36 MB (av 35.8 MB, pyzmq 0.9, PyYAML 0.8, tqdm 0.1), .devcarry 4.1 MB.
# --with-clip adds the three CLIP packages the image lacks (open_clip_torch, ftfy,
# wcwidth); the image already has torchvision 0.26 (for its torch 2.11), timm,
# huggingface_hub, safetensors and regex (the device tool's KINDS.md lists its packages).
# They let the CLIP-loss and training tests run there; the networks, codecs and pipeline
# do not import open_clip.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-/work/main/.venv/bin/python}
SHARED=${SHARED:-../shared/data}
CARRY_LIMIT_MB=64

with_clip=0
base=""  # --base REV: that commit's tree into .devcarry/base, for gpu_check's before/after section
while (($#)); do
  case "$1" in
    --with-clip) with_clip=1 ;;
    --base) base=${2:?--base needs a commit}; shift ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
    *) echo "gpu_wheels.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

# The versions tested here, so the device runs what the CPU tests ran.
version() { "$PYTHON" -c "import importlib.metadata as m; print(m.version('$1'))"; }
core=("av==$(version av)" "pyzmq==$(version pyzmq)" "PyYAML==$(version PyYAML)" "tqdm==$(version tqdm)")
# py-spy (a 3 MB static binary) lets gpu_check's profile section sample the pipeline's threads.
if "$PYTHON" -c "import importlib.metadata as m; m.version('py-spy')" 2> /dev/null; then core+=("py-spy==$(version py-spy)"); fi
clip=()
if ((with_clip)); then
  for name in open_clip_torch ftfy wcwidth; do clip+=("$name==$(version "$name")"); done
fi

rm -rf .whl && mkdir -p .whl
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 \
  -d .whl "${core[@]}" "${clip[@]}"

rm -rf .devcarry && mkdir -p .devcarry/data/weights/ld-lite .devcarry/data/video/m3svd/infrared .devcarry/data/video/m3svd/visible
cp "$SHARED/README.md" .devcarry/data/
cp "$SHARED/weights/ld-lite/final.pt" "$SHARED/weights/ld-lite/LICENSE" .devcarry/data/weights/ld-lite/
pair=1230_1202  # the smallest M3SVD pair (1.5 MB for both clips)
cp "$SHARED/video/m3svd/infrared/$pair.mp4" .devcarry/data/video/m3svd/infrared/
cp "$SHARED/video/m3svd/visible/$pair.mp4" .devcarry/data/video/m3svd/visible/

if [[ -n $base ]]; then
  mkdir -p .devcarry/base && git archive "$base" | tar -x -C .devcarry/base
  echo "baseline: $(git log -1 --format='%h %s' "$base" | cut -c1-100) -> .devcarry/base"
fi

ls -l .whl
tree_kb=$(git ls-files -z | xargs -0 du -ck 2>/dev/null | tail -1 | cut -f1)
whl_kb=$(du -sk .whl | cut -f1)
carry_kb=$(du -sk .devcarry | cut -f1)
total_mb=$(((tree_kb + whl_kb + carry_kb) / 1024))
echo "wheels $((whl_kb / 1024)) MB, .devcarry $((carry_kb / 1024)) MB, tracked files $((tree_kb / 1024)) MB: ${total_mb} MB of the ${CARRY_LIMIT_MB} MiB the device tool carries"
if ((total_mb >= CARRY_LIMIT_MB)); then
  echo "gpu_wheels.sh: ${total_mb} MB exceeds the device tool's ${CARRY_LIMIT_MB} MiB; drop --with-clip" >&2
  exit 1
fi
