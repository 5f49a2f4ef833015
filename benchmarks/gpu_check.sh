#!/usr/bin/env bash
# One GPU check that fits a short lease (at most 8 minutes): model steps fp32 vs mixed precision, bench_cdat.py with
# --amp, one epoch of each baseline on a MOSEI-sized synthetic dataset held on the device, and the three-stage
# TAILOR + CDaT pipeline at reduced epochs, with the estimate for the full pipeline on real MOSEI. Writes
# gpu_check.json and gpu_check.md to $OUT, else $GPU_CHECK_OUT, else benchmarks/results/.
#
#   benchmarks/gpu_check.sh                 # on a GPU machine
#   benchmarks/gpu_check.sh --cpu-smoke     # the same code at tiny sizes on the CPU (< 1 minute), to test the script
#   GPU_CHECK_CPU_SMOKE=1 benchmarks/gpu_check.sh
#   benchmarks/gpu_check.sh --text-dim 768  # BERT-sized text features; other options: python benchmarks/gpu_check.py --help
#
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_CHECK_LIMIT_S (hard wall-clock limit, default 480).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
LIMIT="${GPU_CHECK_LIMIT_S:-480}"
OUTDIR="${OUT:-${GPU_CHECK_OUT:-benchmarks/results}}"
SMOKE="${GPU_CHECK_CPU_SMOKE:-0}"
for arg in "$@"; do [ "$arg" = "--cpu-smoke" ] && SMOKE=1; done
if [ "$SMOKE" != 1 ]; then
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check.sh: no CUDA GPU is visible to $PY (torch: $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>&1 | tail -1))." >&2
    echo "gpu_check.sh: nothing measured. Run it on a GPU machine, or add --cpu-smoke to test the script on a CPU." >&2
    exit 2
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
# the Python side stops starting sections at 450 s; the limit here is the backstop: SIGINT first (partial results are
# written), SIGKILL 15 s later
BUDGET=$(( LIMIT > 60 ? LIMIT - 30 : LIMIT / 2 ))
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
set +e
timeout --signal=INT --kill-after=15 "$LIMIT" "$PY" benchmarks/gpu_check.py --out "$OUTDIR" --budget-s "$BUDGET" "$@"
rc=$?
set -e
if [ $rc -eq 124 ]; then echo "gpu_check.sh: stopped at the ${LIMIT} s limit; $OUTDIR/gpu_check.md has what was measured" >&2; fi
exit $rc
