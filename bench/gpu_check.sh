#!/usr/bin/env bash
# GPU check: on a CUDA machine, install what the GPU paths need, run the GPU-marked tests and
# the benchmarks that have a GPU mode, each under a hard time limit, and write one summary.
#
#   bench/gpu_check.sh [SUMMARY_FILE]
#
# Summary: SUMMARY_FILE, default $OUT/gpu_check_summary.txt ($OUT: the device tool's output
# folder), else /tmp/actstore-gpu-check/gpu_check_summary.txt; full logs in logs/ beside it. The
# whole run stays within GPU_CHECK_BUDGET_S seconds (default 450: under 8 minutes on one
# H200 with installs); a step gets the smaller of its own limit and what is left, and is
# recorded as SKIPPED when nothing is left.
#
# Steps (each under `timeout`):
#   setup   nvidia-smi; actstore importable (pip install -e . otherwise); torch with CUDA
#           (the cu124 wheel when the installed torch has none); FAISS with GPUs
#           (faiss-gpu-cu12 replacing faiss-cpu; its wheels target compute capability 7.0-8.9,
#           so on Hopper the code keeps FAISS on the CPU and trains k-means with torch)
#   tests   pytest -m gpu (tests/gpu: ANN k-means on CUDA, FAISS-GPU exact search, CKA,
#           SAE correlation and ingest on CUDA against their CPU twins)
#   ingest  bench/ingest.py --device cuda: ingest throughput against a bare forward loop,
#           with MFU against the card's dense bf16 peak
#   cka     bench/cka_matrix.py --device cuda: CKA matrix against the naive per-pair way
#   knn     bench/knn.py --device cuda: approximate k-NN build (k-means on the GPU) and
#           search, recall and p50 on the clustered and near-ties data sets
#   sae     bench/sae.py --device cuda: SAE feature correlation and matching
#   atlas   bench/atlas.py --quick --device cuda: 6-model mutual k-NN atlas (dense
#           graph_overlaps on the GPU) against per-pair affinity matrices
# Exit status: 0 when every step passed, 1 otherwise (the summary says which).
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
OUT_DIR=${OUT:-${TMPDIR:-/tmp}/actstore-gpu-check}
mkdir -p "$OUT_DIR/logs"
SUMMARY=${1:-$OUT_DIR/gpu_check_summary.txt}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
START=$(date +%s)
FAILED=0

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in "$REPO/.venv/bin/python" python3 python; do
    if command -v "$c" >/dev/null 2>&1; then PY=$c; break; fi
  done
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

{
  echo "# actstore GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "python: $PY ($("$PY" -V 2>&1)); budget ${BUDGET}s"
  nvidia-smi --query-gpu=name,memory.total,compute_cap,driver_version --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
} > "$SUMMARY"

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# run_step NAME LIMIT_S TAIL_LINES COMMAND...: runs under timeout, appends status and the
# command's last TAIL_LINES lines (its figures) to the summary.
run_step() {
  local name=$1 cap=$2 lines=$3; shift 3
  local rest limit t0 rc secs status log="$OUT_DIR/logs/$name.log"
  rest=$(left)
  limit=$(( cap < rest ? cap : rest ))
  if [ "$limit" -le 10 ]; then
    echo "== $name: SKIPPED (time budget of ${BUDGET}s spent): $*" >> "$SUMMARY"
    FAILED=1
    return
  fi
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - t0 ))
  case $rc in
    0) status=OK ;;
    124|137) status="TIMEOUT after ${limit}s"; FAILED=1 ;;
    *) status="FAILED (exit $rc)"; FAILED=1 ;;
  esac
  {
    echo
    echo "== $name: $status, ${secs}s (limit ${limit}s): $*"
    grep -v -e 'WARN  lance' -e '^\s*$' "$log" | tail -n "$lines" | sed 's/^/   /'
  } >> "$SUMMARY"
}

setup() {
  set -e
  nvidia-smi > /dev/null
  "$PY" -c "import actstore" 2>/dev/null || "$PY" -m pip install -q -e "$REPO"
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "installing CUDA torch"
    "$PY" -m pip install -q --upgrade torch --index-url https://download.pytorch.org/whl/cu124
  fi
  if ! "$PY" -c "import faiss, sys; sys.exit(0 if faiss.get_num_gpus() > 0 else 1)" 2>/dev/null; then
    echo "installing faiss-gpu-cu12 in place of faiss-cpu"
    "$PY" -m pip uninstall -y -q faiss-cpu || true
    "$PY" -m pip install -q "faiss-gpu-cu12>=1.8" || {
      echo "faiss-gpu-cu12 did not install; putting faiss-cpu back"; "$PY" -m pip install -q faiss-cpu; }
  fi
  "$PY" - <<'EOF'
import faiss, torch
print(f"torch {torch.__version__} cuda {torch.version.cuda} available {torch.cuda.is_available()} "
      f"device {torch.cuda.get_device_name(0)} capability {torch.cuda.get_device_capability(0)}")
print(f"faiss {faiss.__version__} gpus {faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0}")
EOF
}
export -f setup
export PY REPO

run_step setup 150 4 bash -c setup
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "no CUDA device visible to torch after setup: the GPU steps were not run" >> "$SUMMARY"
  cat "$SUMMARY"
  exit 1
fi
run_step tests 120 12 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/gpu -rs
run_step ingest 110 10 "$PY" bench/ingest.py --device cuda --prompts 2048 --seq 256 --batch-size 64 \
  --hidden 1024 --layers 24 --reps 3
run_step cka 75 8 "$PY" bench/cka_matrix.py --device cuda --n 8192 --naive-pairs 3 --permutations 20
run_step knn 150 14 "$PY" bench/knn.py --device cuda --no-lance --repeat 1 --queries 200
run_step sae 60 6 "$PY" bench/sae.py --device cuda
run_step atlas 60 8 "$PY" bench/atlas.py --quick --device cuda

echo >> "$SUMMARY"
echo "total $(( $(date +%s) - START ))s of ${BUDGET}s; $([ "$FAILED" = 0 ] && echo 'all steps OK' || echo 'SOME STEPS FAILED')" >> "$SUMMARY"
cat "$SUMMARY"
exit "$FAILED"
