#!/usr/bin/env bash
# Issue 11's GPU check: one run on a device machine, about 8 minutes, every result in $OUT.
#
#   1. here:      scripts/gpu_wheels.sh           (wheels into .whl/, weights + one M3SVD pair into .devcarry/)
#   2. device:    run(command="bash scripts/gpu_check.sh", carry=[".whl", ".devcarry"], timeout_s=540)
#   dry run here: PYTHON=/work/main/.venv/bin/python bash scripts/gpu_check.sh --dry-run
#
# The dry run goes through the same sections on the CPU with tiny sizes (about 2 minutes
# on a loaded 2-core machine), to check the script, not to measure.
#
# Sections, in order of what matters most if time runs short; each has its own timeout
# and the whole run a budget (BUDGET_S, default 500 s). A section that fails or times out
# is recorded in summary.tsv (section, exit status, seconds; 124 = timed out) and the
# next one runs; each writes <section>.log and its results. The device tool brings back at
# most 8 files, so the results are kept in one folder and packed after every section into
# $OUT/gpu_check.tar.gz (a run stopped at its limit still returns what finished), with
# $OUT/summary.tsv beside it:
#   env      GPU, driver, torch/CUDA/cuDNN, PyAV's FFmpeg and hardware devices   env.log
#   install  .whl/*.whl into a scratch folder: pip --no-index --no-deps --target
#   codecs   NVENC/NVDEC probe with FFmpeg's reasons, CPU vs NVDEC decode fps     codecs.json
#   tests    pytest -k cuda (TF32-aware batch test, inductor test), codec/batching tests   tests_*.xml
#   bench    ldfusion bench --devices cuda: model_on_device, model, pipeline;
#            batches 8 and 32 at 640x512                                             bench.json
#   bench_compiled  the bench's model_on_device and pipeline with --compile on,
#            640x512, batch 32                                                     bench_compiled.json
#   bench_graphs  the same with --compile-mode reduce-overhead (CUDA graphs)        bench_graphs.json
#   graphs_run  scripts/graphs_check.py: CUDA graphs in whole runs (file mode, two frame sizes,
#            PNG sinks, frames against eager's; live latency with graphs)            graphs_run.json
#   latency  ldfusion run, live mode, the M3SVD pair replayed at its recorded 22 fps,
#            MP4 sink: capture-to-sink p50/p99 (target p99 <= 50 ms at 30 fps)      latency_summary.json
#   baseline the bench's model and pipeline paths from an older tree carried in
#            .devcarry/base (scripts/gpu_wheels.sh --base REV): before/after measured
#            in one run on one machine                                               bench_base.json
#   overhead the bench's decode and passthrough paths (the pipeline with an identity
#            network) at 640x512, batches 8 and 32: the pipeline's own cost          bench_overhead.json
#   streams  ldfusion bench --streams 8 at 640x512 (only once the bench has it)     bench_streams.json
#   profile  py-spy (when its wheel was carried) samples every thread of the compiled
#            pipeline bench at 640x512, batch 32: where the host's time goes       profile_pipeline.txt
#   compile  scripts/compile_speed.py: eager vs torch.compile fps, compile time      compile.json
#   bench_1080  the bench at 1920x1080 (its own section: a timeout loses one size)  bench_1080.json
#
# SECTIONS="install bench latency" runs only those (a rerun of what changed); TESTS_K narrows
# the tests section's CUDA selection (pytest -k "cuda and ($TESTS_K)").
set -uo pipefail  # no -e: a failing section must not stop the others

LDFUSION_MODULE="ldfusion_cli.main"  # the CLI dispatcher; change this one line if it moves
BUDGET_S=${BUDGET_S:-500}
PY=${PYTHON:-python3}
DRY_RUN=0
case "${1:-}" in
  --dry-run) DRY_RUN=1 ;;
  "") ;;
  -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
  *) echo "gpu_check.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
SCRATCH=$(mktemp -d /tmp/gpu_check_scratch.XXXXXX)
RESULTS=$SCRATCH/gpu_check  # packed into $OUT after every section
mkdir -p "$OUT" "$RESULTS" "$SCRATCH/bin" "$SCRATCH/site"
START=$(date +%s)
printf 'section\texit\tseconds\n' > "$RESULTS/summary.tsv"

# The wheels are cp312; on the device they go on the path. In a dry run the local venv
# already has the packages, and the install only checks that the wheels install.
if ((DRY_RUN)); then
  export PYTHONPATH="$REPO"
else
  export PYTHONPATH="$REPO:$SCRATCH/site"
fi
# `ldfusion` as a command, whatever the dispatcher's module is called.
printf '#!/usr/bin/env bash\nexec %q -m %s "$@"\n' "$PY" "$LDFUSION_MODULE" > "$SCRATCH/bin/ldfusion"
chmod +x "$SCRATCH/bin/ldfusion"
export PATH="$SCRATCH/bin:$PATH"
export PY OUT SCRATCH RESULTS REPO DRY_RUN

# The carried data, where the tests' shared_data fixture looks (../shared/data); never
# replaces data that is already there.
if [[ ! -e ../shared/data && -d .devcarry/data ]]; then
  mkdir -p ../shared && ln -s "$REPO/.devcarry/data" ../shared/data
fi
CLIP=../shared/data/video/m3svd/visible/1230_1202.mp4

section() {  # section NAME MAX_SECONDS FUNCTION: run FUNCTION under a timeout, log it, record it
  local name=$1 max=$2 fn=$3 left limit started rc
  if [[ -n ${SECTIONS:-} && " $SECTIONS " != *" $name "* ]]; then
    return
  fi
  left=$((BUDGET_S - ($(date +%s) - START)))
  limit=$((max < left ? max : left))
  if ((limit < 10)); then
    printf '%s\tskipped\t0\n' "$name" >> "$RESULTS/summary.tsv"
    echo "== $name: skipped, the ${BUDGET_S}s budget is spent"
    pack_results
    return
  fi
  echo "== $name (up to ${limit}s)"
  started=$(date +%s)
  timeout --kill-after=5 "$limit" bash -c "$fn" > "$RESULTS/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - started))" >> "$RESULTS/summary.tsv"
  tail -n 12 "$RESULTS/$name.log"
  pack_results
}

pack_results() {  # written beside $OUT, then moved in, so $OUT never holds half an archive
  tar -czf "$SCRATCH/gpu_check.tar.gz" -C "$SCRATCH" gpu_check && mv "$SCRATCH/gpu_check.tar.gz" "$OUT/"
  cp "$RESULTS/summary.tsv" "$OUT/"
}

env_info() {
  date -u
  nvidia-smi || echo "no nvidia-smi"
  nvidia-smi -q 2>/dev/null | grep -iE "product name|driver version|cuda version|encoder|decoder" || true
  "$PY" -c 'import torch, platform; print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)'
  "$PY" -c 'import av; print("pyav", av.__version__, av.library_versions); print("hwdevices", av.codec.hwaccel.hwdevices_available())'
  ls -l .whl .devcarry/data 2>&1
}

install_wheels() {
  local target=(--target "$SCRATCH/site")
  if ((DRY_RUN)); then
    target+=(--python-version 3.12 --implementation cp --abi cp312 --only-binary=:all:
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
  fi
  if "$PY" -m pip --version > /dev/null 2>&1; then
    "$PY" -m pip install --quiet --no-index --no-deps "${target[@]}" .whl/*.whl
  else  # no pip in the image: a wheel without dependencies installs by unpacking it
    echo "no pip; unpacking the wheels"
    for wheel in .whl/*.whl; do "$PY" -m zipfile -e "$wheel" "$SCRATCH/site"; done
  fi
  ls "$SCRATCH/site"
  "$PY" -c 'import av, zmq, yaml, tqdm; print("imports ok: av", av.__version__, "zmq", zmq.__version__)'
}

probe_codecs() {
  "$PY" scripts/codec_probe.py --clip "$CLIP" --out "$RESULTS/codecs.json"
}

run_tests() {
  local rc=0 ignore=()
  # The training and loss tests need torchvision and open_clip, which are carried only
  # with gpu_wheels.sh --with-clip; without them those two modules are left out.
  if ! "$PY" -c 'import torchvision, open_clip' > /dev/null 2>&1; then
    ignore=(--ignore=tests/test_losses.py --ignore=tests/test_training.py)
  fi
  # Every CUDA-parametrised test: networks with TF32 off, registration, inductor vs eager.
  "$PY" -m pytest -q -p no:cacheprovider "${ignore[@]}" -k "cuda${TESTS_K:+ and ($TESTS_K)}" --junitxml="$RESULTS/tests_cuda.xml" tests || rc=$?
  if [[ -z ${TESTS_K:-} ]]; then
    "$PY" -m pytest -q -p no:cacheprovider --junitxml="$RESULTS/tests_codecs_batching.xml" \
      tests/test_codecs.py tests/test_fixed_batch.py tests/test_batching.py || rc=$?
  fi
  return $rc
}

run_bench() {  # run_bench SIZE JSON_NAME
  if ((DRY_RUN)); then
    ldfusion bench --devices cpu --resolutions 64x48 --batch-sizes 2 --paths model_on_device model pipeline \
      --frames 4 --warmup 1 --out "$RESULTS/$2"
  else
    # Enough frames that the pipeline's start (threads, decoders) is a small part of the time
    ldfusion bench --devices cuda --resolutions "$1" --batch-sizes 8 32 \
      --paths model_on_device model pipeline --frames "$3" --warmup 3 --out "$RESULTS/$2"
  fi
}

run_baseline() {  # the same measurement from an older tree: before/after on one machine, in one run
  if [[ ! -d .devcarry/base ]]; then
    echo "no .devcarry/base (scripts/gpu_wheels.sh --base REV); nothing to compare with"
    return 0
  fi
  local args=(--devices cuda --resolutions 640x512 --batch-sizes 8 32 --frames 2048 --warmup 3)
  if ((DRY_RUN)); then args=(--devices cpu --resolutions 64x48 --batch-sizes 2 --frames 4 --warmup 1); fi
  cd .devcarry/base && PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m "$LDFUSION_MODULE" bench "${args[@]}" \
    --paths model pipeline --out "$RESULTS/bench_base.json"
}

run_compile() {
  if ((DRY_RUN)); then
    "$PY" scripts/compile_speed.py --device cpu --resolution 64x48 --batch-sizes 2 --iterations 2 \
      --backend aot_eager --out "$RESULTS/compile.json"
  else
    "$PY" scripts/compile_speed.py --device cuda --resolution 640x512 --batch-sizes 32 8 --iterations 50 \
      --out "$RESULTS/compile.json"
  fi
}

run_streams() {
  if ! ldfusion bench --help | grep -q -- "--streams"; then
    echo "ldfusion bench has no --streams yet (issue 10); nothing measured"
    return 0
  fi
  if ((DRY_RUN)); then
    ldfusion bench --devices cpu --resolutions 64x48 --batch-sizes 2 --paths pipeline --streams 2 \
      --frames 4 --warmup 1 --out "$RESULTS/bench_streams.json"
  else
    ldfusion bench --devices cuda --resolutions 640x512 --batch-sizes 32 --paths pipeline --streams 8 \
      --frames 512 --warmup 3 --out "$RESULTS/bench_streams.json"
  fi
}

run_overhead() {  # what the pipeline costs without a network, beside decoding alone
  if ((DRY_RUN)); then
    ldfusion bench --devices cpu --resolutions 64x48 --batch-sizes 2 --paths decode passthrough \
      --frames 4 --warmup 1 --out "$RESULTS/bench_overhead.json"
  else
    ldfusion bench --devices cuda --resolutions 640x512 --batch-sizes 8 32 --paths decode passthrough \
      --frames 2048 --warmup 3 --out "$RESULTS/bench_overhead.json"
  fi
}

run_graphs_check() {  # CUDA graphs in whole runs: whether reduce-overhead can be the default
  local device=cuda limit=()
  if ((DRY_RUN)); then device=cpu limit=(--max-frames 5); fi
  "$PY" scripts/graphs_check.py --ir ../shared/data/video/m3svd/infrared/1230_1202.mp4 --vi "$CLIP" --device "$device" \
    "${limit[@]}" --out "$RESULTS/graphs_run.json"
}

run_latency() {  # live mode: the carried M3SVD pair replayed at its recorded rate, one MP4 sink
  local device=cuda limit=""
  if ((DRY_RUN)); then device=cpu limit=", max_frames: 5"; fi
  cat > "$SCRATCH/latency.yaml" <<YAML
streams:
  - id: pair0
    ir: {kind: video, path: $REPO/../shared/data/video/m3svd/infrared/1230_1202.mp4}
    visible: {kind: video, path: $REPO/$CLIP}
model: {device: $device}
sinks:
  - {kind: mp4, path: "{stream}.mp4"}
run: {out_dir: $SCRATCH/latency, mode: live, realtime: true, progress: false$limit}
YAML
  ldfusion run "$SCRATCH/latency.yaml" && cp "$SCRATCH/latency/summary.json" "$RESULTS/latency_summary.json"
}

run_bench_compiled() {  # run_bench_compiled MODE JSON_NAME
  if ((DRY_RUN)); then
    ldfusion bench --devices cpu --resolutions 64x48 --batch-sizes 2 --paths model_on_device pipeline \
      --compile on --compile-backend aot_eager --compile-mode "$1" --frames 4 --warmup 2 --out "$RESULTS/$2"
  else
    ldfusion bench --devices cuda --resolutions 640x512 --batch-sizes 32 --paths model_on_device pipeline \
      --compile on --compile-mode "$1" --frames 2048 --warmup 3 --out "$RESULTS/$2"
  fi
}

run_profile() {  # every thread's Python stacks, sampled: where the pipeline's host time goes (compiled, as `run` on CUDA)
  local size=640x512 frames=2048 device=cuda spy
  spy=$(command -v py-spy || echo "$SCRATCH/site/bin/py-spy")
  if [[ ! -x $spy ]]; then
    echo "no py-spy (its wheel was not carried); nothing profiled"
    return 0
  fi
  local backend=inductor
  if ((DRY_RUN)); then size=64x48 frames=32 device=cpu backend=aot_eager; fi
  "$spy" record --threads --idle --rate 200 --format raw -o "$RESULTS/profile_pipeline.txt" -- \
    "$PY" -m "$LDFUSION_MODULE" bench --devices "$device" --resolutions "$size" --batch-sizes 32 \
    --paths pipeline --compile on --compile-backend "$backend" --frames "$frames" --warmup 3 --out "$SCRATCH/bench_profiled.json"
}

export -f env_info install_wheels probe_codecs run_tests run_bench run_overhead run_compile run_streams run_latency run_graphs_check \
  run_bench_compiled run_profile run_baseline pack_results
export LDFUSION_MODULE TESTS_K
export CLIP

# In order of what the next decision needs: correctness, the eager and compiled pipeline
# against the network, live latency, then the rest. The sections' times in the H200 runs
# of 2026-11-27 add up to about 7 minutes (tests 60-70 s, bench and baseline 45-50 s each
# at 2048 frames, the others 5-45 s); BUDGET_S cuts the tail if a machine is slower.
section env 30 env_info
section install 60 install_wheels
section codecs 40 probe_codecs
section tests 100 run_tests
section bench 70 "run_bench 640x512 bench.json 2048"
section bench_compiled 80 "run_bench_compiled default bench_compiled.json"
section bench_graphs 80 "run_bench_compiled reduce-overhead bench_graphs.json"
section graphs_run 150 run_graphs_check
section latency 60 run_latency
section baseline 60 run_baseline
section overhead 40 run_overhead
section streams 45 run_streams
section profile 60 run_profile
section compile 100 run_compile
section bench_1080 80 "run_bench 1920x1080 bench_1080.json 256"

echo "== done in $(($(date +%s) - START))s; results in $OUT/gpu_check.tar.gz"
column -t "$OUT/summary.tsv" 2>/dev/null || cat "$OUT/summary.tsv"
rm -rf "$SCRATCH"
