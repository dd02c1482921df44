#!/usr/bin/env bash
# The GPU checks of issue 20 in one run, its steps' limits adding up to 900 s (not run on a GPU yet; the first
# GPU run of the older checks, 2026-12-04, is in ../shared/gpu-runs/2026-12-04/). The same steps run at tiny
# sizes on a CPU to check this script.
#
#   benchmarks/gpu_check.sh prepare        # here (data + PyPI): packs .device/data.tar.gz and .device/wheels
#   benchmarks/gpu_check.sh                # there, the device tool carrying ['.device']: installs, unpacks, runs
#   DEVICE=cpu benchmarks/gpu_check.sh     # anywhere: the same steps at tiny sizes
#
# Steps, each under its own time limit so that one hang cannot eat the rest:
#   tests         tests/test_engine_gpu.py, tests/test_engine_cuda_paths.py and tests/test_forkserver.py (forked
#                 kernels on CUDA) (--junitxml tests.xml)
#   bench_engine  benchmarks/bench_engine.py on the device: run_job against a bare loop, like with like
#   matrix        one epoch each of keras/mnist_convnet and timm/resnet18 on CIFAR-10 with amp on/off x
#                 channels_last on/off, then compile once: speed, spreads, GPU busy shares, phases
#   grid          the quick suite's jobs on mnist and cifar10 through `imgbench run`, with the report: wall
#                 time, fixed cost per job, speed spreads, GPU busy shares and where the time went
#   parity        benchmarks/bench_parity.py on the device: the notebook path against a plain process
# Writes under $OUT (what the device tool brings back): summary.md, gpu_check.log, tests.xml,
# bench_engine.json, matrix.json, matrix.md, grid_results.csv, grid_report.md, parity.json.
#
# The data travels as one tarball (.device/data.tar.gz: MNIST's four IDX files and a CIFAR-10 subset as PNG
# class folders; 12,000 small files would take 79 MB on disk for 38 MB of data), unpacked where it runs.
# Environment: OUT (default results/gpu_check), DEVICE (cuda | cpu, default cuda), PYTHON (default python3),
# LIMIT_SCALE (multiplies every step's limit, default 1; a CPU check under load needs more), STEPS (the steps to
# run, default all: the device tool allows 600 s per command, so run `STEPS="tests bench_engine matrix"` and then
# `STEPS="grid parity"` with OUT set apart for each).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-results/gpu_check}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
LIMIT_SCALE=${LIMIT_SCALE:-1}
PACK=.device
TARBALL=$PACK/data.tar.gz
WHEELS=$PACK/wheels
SHARED_DATA=${IMGBENCH_TEST_DATA:-../shared/data}  # prepare packs MNIST and CIFAR-10 from here
CIFAR_TRAIN_PER_CLASS=1000  # all of the shared copy's training images
CIFAR_TEST_PER_CLASS=200  # 2,000 of the 10,000 test images: the tarball, the wheels and the repo fit 64 MiB
# Python packages the device image lacks (it has torch, timm, pandas, seaborn, scikit-learn, pytest...)
MISSING="keras papermill ipykernel platformdirs ipywidgets nvidia-ml-py"
DEVICE_HAS="absl_py attrs certifi charset_normalizer click h5py idna jinja2 markdown_it_py markupsafe mdurl
ml_dtypes numpy packaging psutil pygments python_dateutil pyyaml requests rich tqdm typing_extensions urllib3"

prepare() {
    [ -d "$SHARED_DATA/cifar10/train" ] && [ -d "$SHARED_DATA/mnist" ] || {
        echo "no $SHARED_DATA/{mnist,cifar10}: set IMGBENCH_TEST_DATA"; return 2; }
    local staging
    staging=$(mktemp -d)
    mkdir -p "$staging/data" "$PACK" && cp -r "$SHARED_DATA/mnist" "$staging/data/"
    for split_count in "train $CIFAR_TRAIN_PER_CLASS" "test $CIFAR_TEST_PER_CLASS"; do
        set -- $split_count
        for folder in "$SHARED_DATA"/cifar10/"$1"/*/; do
            class=$(basename "$folder")
            mkdir -p "$staging/data/cifar10/$1/$class"
            ls "$folder" | sort | head -n "$2" | while read -r f; do cp "$folder/$f" "$staging/data/cifar10/$1/$class/"; done
        done
    done
    tar -czf "$TARBALL" -C "$staging" data && rm -rf "$staging"
    rm -rf "$WHEELS" && mkdir -p "$WHEELS"
    local platforms=""
    for n in 17 24 26 27 28 31 34 35; do platforms="$platforms --platform manylinux_2_${n}_x86_64"; done
    "$PYTHON" -m pip download -q --dest "$WHEELS" --only-binary=:all: --python-version 3.12 --implementation cp \
        $platforms --platform manylinux2014_x86_64 --platform manylinux1_x86_64 $MISSING || return 1
    for whl in "$WHEELS"/*.whl; do
        name=$(basename "$whl" | cut -d- -f1 | tr 'A-Z' 'a-z')
        for has in $DEVICE_HAS; do [ "$name" = "$has" ] && rm -f "$whl"; done
    done
    du -sh "$TARBALL" "$WHEELS" "$PACK"
    echo "now: the device tool with carry ['$PACK'] and command: benchmarks/gpu_check.sh"
}

if [ "${1:-}" = "prepare" ]; then prepare; exit $?; fi

mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
DATA=$(mktemp -d /tmp/imgbench-gpu-check-data.XXXX)
tar -xzf "$TARBALL" -C "$DATA" || { echo "no $TARBALL: run benchmarks/gpu_check.sh prepare first"; exit 2; }
export PYTHONUNBUFFERED=1 KERAS_BACKEND=torch IMGBENCH_DATA_DIR="$DATA/data"
export IMGBENCH_CACHE_DIR=${IMGBENCH_CACHE_DIR:-/tmp/imgbench-gpu-check-cache}
SUMMARY="$OUT/summary.md"
started=$(date +%s)
echo "# gpu_check ($DEVICE) $(date -u +%FT%TZ)" >"$SUMMARY"

STEPS=${STEPS:-tests bench_engine matrix grid parity}
selected() { [[ " $STEPS " == *" $1 "* ]]; }

step() {  # step NAME LIMIT_S COMMAND...: runs it, records status and seconds in the summary
    local name=$1 limit=$(($2 * LIMIT_SCALE)); shift 2
    if ! selected "$name"; then
        echo "| $name | not in STEPS | | |" >>"$SUMMARY"
        return 0
    fi
    local t0=$(date +%s)
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@"
    local rc=$?
    echo "| $name | rc $rc | $(($(date +%s) - t0)) s | $limit s |" >>"$SUMMARY"
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
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
    echo '```'
    echo
    echo "| step | status | seconds | limit |"
    echo "| --- | --- | --- | --- |"
} >>"$SUMMARY"

if [ "$DEVICE" = "cpu" ]; then  # tiny sizes: checks the script, not the figures
    BENCH="--train-images 512 --epochs 1 --repeats 1 --bench-seconds 0.05"
    JOB="train_samples=300 test_samples=200 bench_seconds=0.05 batch_size=64"
    GRID="-p epochs=1 -p train_samples=300 -p test_samples=200 -p bench_seconds=0.05"
    PARITY="--rounds 1 --train-samples 300 --test-samples 100 --bench-seconds 0.05"
    TESTS="tests/test_engine_gpu.py tests/test_timing.py"
else
    BENCH="--repeats 3"
    JOB="bench_seconds=1.0"
    GRID=""  # the quick suite's recipe, as it is
    PARITY="--rounds 3"
    TESTS="tests/test_engine_gpu.py tests/test_engine_cuda_paths.py tests/test_forkserver.py"
fi

step tests 160 "$PYTHON" -m pytest -q -p no:cacheprovider -o addopts="" $TESTS --junitxml="$OUT/tests.xml"

step bench_engine 120 "$PYTHON" benchmarks/bench_engine.py --device "$DEVICE" $BENCH --json "$OUT/bench_engine.json"

step matrix 240 "$PYTHON" - "$OUT" "$DEVICE" $JOB <<'PY'
"""One epoch of each model on CIFAR-10 per (amp, channels_last), then compile once (on a GPU): matrix.json/.md."""
import json
import sys
import tomllib

from imgbench.engine import run_job
from imgbench.paths import atomic_write_json, atomic_write_text

out, device, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
params = {k: tomllib.loads(f"v = {v}")["v"] for k, v in (item.split("=", 1) for item in extra)}
FIELDS = ("status", "precision_requested", "precision", "train_throughput", "train_throughput_rel_iqr",
          "train_gpu_busy", "infer_throughput", "infer_throughput_rel_iqr", "infer_gpu_busy", "latency_p50_ms",
          "peak_memory_mb", "train_peak_memory_mb", "compile_time_s", "train_time_s", "accuracy", "flops")
runs = [(model, amp, cl, False) for model in ("keras/mnist_convnet", "timm/resnet18")
        for amp in (True, False) for cl in (True, False)]
if device != "cpu":  # on a CPU, inductor's C++ build takes minutes; tests/test_engine.py counts the graphs there
    runs.append(("timm/resnet18", True, True, True))
rows = []
for model, amp, cl, compiled in runs:
    result = run_job(model, "cifar10", seed=0, progress=False, epochs=1, device=device, amp=amp,
                     channels_last=cl, compile=compiled, **params)
    row = {"model": model, "amp": amp, "channels_last": cl, "compile": compiled,
           **{k: result.metrics.get(k) for k in FIELDS}, "phases": result.metrics.get("phases")}
    rows.append(row)
    print(json.dumps({k: v for k, v in row.items() if k != "phases"}), flush=True)
    atomic_write_json(f"{out}/matrix.json", rows)  # after every run: a step cut by its limit keeps what ran
head = ("model", "amp", "channels_last", "compile") + FIELDS
lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
for row in rows:
    cells = [f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k]) for k in head]
    lines.append("| " + " | ".join(cells) + " |")
atomic_write_text(f"{out}/matrix.md", "\n".join(lines) + "\n")
PY

GRID_OUT=/tmp/imgbench-gpu-check-grid
rm -rf "$GRID_OUT"
step grid 180 "$PYTHON" -m imgbench.cli run -m keras/mnist_convnet -m timm/resnet18 -d mnist -d cifar10 \
    -p device=\"$DEVICE\" $GRID --out "$GRID_OUT"
cp "$GRID_OUT/results.csv" "$OUT/grid_results.csv" 2>/dev/null
cp "$GRID_OUT/report.md" "$OUT/grid_report.md" 2>/dev/null
selected grid && "$PYTHON" - "$GRID_OUT" >>"$SUMMARY" <<'PY'
"""The grid's fixed cost per job, as issue 20 measures it: (wall - the sum of train_time_s) / jobs."""
import csv
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
try:
    run = json.loads((out / "run.json").read_text())
    rows = list(csv.DictReader(open(out / "results.csv")))
except OSError as exc:
    sys.exit(f"\nno grid results: {exc}")
walls = [json.loads((out / "jobs" / r["job_id"] / "metrics.json").read_text()).get("wall") or {} for r in rows]
if not rows or not all(walls):
    sys.exit("\nno job recorded its wall time")
span = max(w["ended_at"] for w in walls) - min(w["started_at"] for w in walls)
train = sum(float(r["train_time_s"] or 0) for r in rows)
bench_seconds = run["grid"][0]["recipe"]["bench_seconds"]
print(f"\ngrid: {len(rows)} jobs in {span:.1f} s from the first job's start to the last one's end; fixed cost "
      f"per job (that span less the sum of train_time_s, over the jobs) {(span - train) / len(rows):.2f} s, "
      f"with bench_seconds={bench_seconds:g}")
PY

step parity 200 "$PYTHON" benchmarks/bench_parity.py --device "$DEVICE" $PARITY --json "$OUT/parity.json"

echo "| total | | $(($(date +%s) - started)) s | |" >>"$SUMMARY"
{ echo; echo "## matrix"; echo; cat "$OUT/matrix.md" 2>/dev/null; } >>"$SUMMARY"
rm -rf "$DATA"
cat "$SUMMARY"
