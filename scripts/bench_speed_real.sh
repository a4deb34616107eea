#!/usr/bin/env bash
# Issue 14: whole-scan inference on a real-extent BraTS-size case (4 x 240 x 240 x 155 at 1 mm, brain crop
# about 146 x 174 x 149), untrained seeded feature_size-48 weights, roi 128, overlap 0.5: the stock MONAI
# path and `medseg predict` with its defaults in one run, then medseg's window and precision options on the
# same case and weights. Run it alone on the machine (each path is timed end to end in its own process).
#   bash scripts/bench_speed_real.sh [OUT]          # about 15 minutes on 2 cores
set -euo pipefail
OUT=${1:-runs/bench_speed_real}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
grep -o -m1 'model name.*' /proc/cpuinfo | tee "$OUT/cpu.txt"
grep -o -w -m1 'avx512_bf16\|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ' | tee -a "$OUT/cpu.txt"; echo
run() {  # NAME [--no-stock] [--medseg-args=...]
  local name=$1; shift
  echo "== $name"
  "$PY" scripts/bench_inference.py --feature-size 48 --out "$OUT/cases" --json "$OUT/$name.json" "$@"
}
run default
run plan --no-stock --medseg-args='--window plan'
run bf16 --no-stock --medseg-args='--precision bf16'
run plan_bf16 --no-stock --medseg-args='--window plan --precision bf16'
