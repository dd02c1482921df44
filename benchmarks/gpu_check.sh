#!/usr/bin/env bash
# The first GPU session's checks, in one run of about 8 minutes on an H200. Not yet run on a GPU.
#
#   benchmarks/gpu_check.sh prepare   # here (data + PyPI): fills .device/ with a CIFAR-10 copy and wheels
#   benchmarks/gpu_check.sh           # there: installs the wheels and imgbench, then runs the checks
#   DEVICE=cpu benchmarks/gpu_check.sh   # anywhere: the same steps at tiny sizes, to check this script
#
# Steps (each under its own time limit, so one hang cannot eat the rest): the gpu tests; bench_engine.py on
# the device; one epoch each of keras/mnist_convnet and timm/resnet18 on CIFAR-10 with amp on/off x
# channels_last on/off, plus compile once; a 4-job grid (2 models x 2 seeds) with its report. Writes under
# $OUT: summary.md, gpu_check.log, tests.xml, bench_engine.json, matrix.json, matrix.md, grid_results.csv,
# grid_report.md (8 files: what the device tool brings back).
#
# Environment: OUT (default results/gpu_check), IMGBENCH_GPU_DATA (the folder holding cifar10/, default
# .device/data), DEVICE (cuda | cpu, default cuda), PYTHON (default python3), WHEELS (default .device/wheels),
# LIMIT_SCALE (multiplies the step limits, default 1).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-results/gpu_check}
DATA=${IMGBENCH_GPU_DATA:-.device/data}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.device/wheels}
LIMIT_SCALE=${LIMIT_SCALE:-1}  # multiplies every step's time limit (a slow CPU check needs more)
SHARED_DATA=${IMGBENCH_TEST_DATA:-../shared/data}  # prepare copies CIFAR-10 (PNG class folders) from here
CIFAR_TEST_PER_CLASS=200  # 2,000 of the 10,000 test images: the copy, the wheels and the repo fit 64 MiB
# Python packages the device image lacks (it has torch, timm, pandas, seaborn, scikit-learn, pytest...)
MISSING="keras papermill ipykernel platformdirs ipywidgets"
DEVICE_HAS="absl_py attrs certifi charset_normalizer click h5py idna jinja2 markdown_it_py markupsafe mdurl
ml_dtypes numpy packaging psutil pygments python_dateutil pyyaml requests rich tqdm typing_extensions urllib3"

prepare() {
    [ -d "$SHARED_DATA/cifar10/train" ] || { echo "no $SHARED_DATA/cifar10/train: set IMGBENCH_TEST_DATA"; return 2; }
    rm -rf .device/data/cifar10 "$WHEELS" && mkdir -p .device/data/cifar10 "$WHEELS"
    cp -r "$SHARED_DATA/cifar10/train" .device/data/cifar10/
    for folder in "$SHARED_DATA"/cifar10/test/*/; do
        class=$(basename "$folder")
        mkdir -p ".device/data/cifar10/test/$class"
        ls "$folder" | sort | head -n "$CIFAR_TEST_PER_CLASS" | while read -r f; do cp "$folder/$f" ".device/data/cifar10/test/$class/"; done
    done
    local platforms=""
    for n in 17 24 26 27 28 31 34 35; do platforms="$platforms --platform manylinux_2_${n}_x86_64"; done
    "$PYTHON" -m pip download -q --dest "$WHEELS" --only-binary=:all: --python-version 3.12 --implementation cp \
        $platforms --platform manylinux2014_x86_64 --platform manylinux1_x86_64 $MISSING || return 1
    for whl in "$WHEELS"/*.whl; do
        name=$(basename "$whl" | cut -d- -f1 | tr 'A-Z' 'a-z')
        for has in $DEVICE_HAS; do [ "$name" = "$has" ] && rm -f "$whl"; done
    done
    du -sh .device/data "$WHEELS"
    echo "now: device run with carry ['.device'] and command: benchmarks/gpu_check.sh"
}

if [ "${1:-}" = "prepare" ]; then prepare; exit $?; fi

mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 KERAS_BACKEND=torch IMGBENCH_DATA_DIR="$DATA"
export IMGBENCH_CACHE_DIR=${IMGBENCH_CACHE_DIR:-/tmp/imgbench-gpu-check-cache}
SUMMARY="$OUT/summary.md"
started=$(date +%s)
echo "# gpu_check ($DEVICE) $(date -u +%FT%TZ)" >"$SUMMARY"

step() {  # step NAME LIMIT_S COMMAND...: runs it, records status and seconds in the summary
    local name=$1 limit=$(($2 * LIMIT_SCALE)); shift 2
    local t0=$(date +%s)
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@"
    local rc=$?
    echo "| $name | rc $rc | $(($(date +%s) - t0)) s |" >>"$SUMMARY"
    echo "== $name: rc $rc"
}

if ! "$PYTHON" -c "import keras, papermill" 2>/dev/null && [ -d "$WHEELS" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile "$WHEELS"/*.whl || exit 1
fi
if ! "$PYTHON" -c "import imgbench.engine" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
fi
{
    echo
    echo '```'
    "$PYTHON" -c "import torch, keras, timm; print('torch', torch.__version__, 'keras', keras.__version__, 'timm', timm.__version__); print('cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0), torch.cuda.is_available() and torch.cuda.get_device_capability(0))"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader 2>/dev/null || true
    echo '```'
    echo
    echo "| step | status | seconds |"
    echo "| --- | --- | --- |"
} >>"$SUMMARY"

if [ "$DEVICE" = "cpu" ]; then  # tiny sizes: checks the script, not the figures
    BENCH="--train-images 512 --epochs 1 --repeats 1 --bench-seconds 0.05"
    JOB="train_samples=500 test_samples=200 bench_seconds=0.05 batch_size=64"
    TESTS="tests/test_engine_gpu.py"
else
    BENCH="--repeats 3"
    JOB="bench_seconds=1.0"
    TESTS="tests/test_engine_gpu.py tests/test_engine_cuda_paths.py"
fi

step tests 140 "$PYTHON" -m pytest -q -p no:cacheprovider -o addopts="" $TESTS --junitxml="$OUT/tests.xml"

step bench_engine 80 "$PYTHON" benchmarks/bench_engine.py --device "$DEVICE" $BENCH --json "$OUT/bench_engine.json"

step matrix 170 "$PYTHON" - "$OUT" "$DEVICE" $JOB <<'PY'
"""One epoch of each model on CIFAR-10 per (amp, channels_last), then compile once: matrix.json/.md."""
import json
import sys
import tomllib

from imgbench.engine import run_job
from imgbench.paths import atomic_write_json, atomic_write_text

out, device, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
params = {k: tomllib.loads(f"v = {v}")["v"] for k, v in (item.split("=", 1) for item in extra)}
FIELDS = ("status", "precision_requested", "precision", "train_throughput", "infer_throughput", "latency_p50_ms",
          "peak_memory_mb", "train_peak_memory_mb", "compile_time_s", "train_time_s", "accuracy", "flops")
runs = [(model, amp, cl, False) for model in ("keras/mnist_convnet", "timm/resnet18")
        for amp in (True, False) for cl in (True, False)] + [("timm/resnet18", True, True, True)]
rows = []
for model, amp, cl, compiled in runs:
    result = run_job(model, "cifar10", seed=0, progress=False, epochs=1, device=device, amp=amp,
                     channels_last=cl, compile=compiled, **params)
    row = {"model": model, "amp": amp, "channels_last": cl, "compile": compiled,
           **{k: result.metrics.get(k) for k in FIELDS}, "phases": result.metrics.get("phases")}
    rows.append(row)
    print(json.dumps({k: v for k, v in row.items() if k != "phases"}), flush=True)
atomic_write_json(f"{out}/matrix.json", rows)
head = ("model", "amp", "channels_last", "compile") + FIELDS
lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
for row in rows:
    cells = [f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k]) for k in head]
    lines.append("| " + " | ".join(cells) + " |")
atomic_write_text(f"{out}/matrix.md", "\n".join(lines) + "\n")
PY

GRID=/tmp/imgbench-gpu-check-grid
rm -rf "$GRID"
GRID_PARAMS=(-p epochs=1 -p device=\"$DEVICE\")
for kv in $JOB; do GRID_PARAMS+=(-p "$kv"); done
step grid 140 "$PYTHON" -m imgbench.cli run -m keras/mnist_convnet -m timm/resnet18 -d cifar10 --seeds 0,1 \
    "${GRID_PARAMS[@]}" --out "$GRID" --data-dir "$DATA"
cp "$GRID/results.csv" "$OUT/grid_results.csv" 2>/dev/null
cp "$GRID/report.md" "$OUT/grid_report.md" 2>/dev/null

echo "| total | | $(($(date +%s) - started)) s |" >>"$SUMMARY"
{ echo; echo "## matrix"; echo; cat "$OUT/matrix.md" 2>/dev/null; } >>"$SUMMARY"
cat "$SUMMARY"
