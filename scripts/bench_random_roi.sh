#!/usr/bin/env bash
# Issue 14: does training on crops of random size (data.random_roi) make larger inference windows safe?
# Hard demo cases of real BraTS extent at 2 mm (120 x 120 x 78 voxels, brain crop about 73 x 87 x 75),
# 12 training / 4 held-out; two fits of the demo recipe at the same steps and seed, one on fixed 64^3
# crops, one on crops drawn per batch from 64 and 96; then scripts/bench_window.py compares, for each,
# training-roi fp32 windows with `plan`, `auto` (one pass over the crop) and bf16 on the held-out cases.
# A third fit at roi 96 asks the converse, what `plan` does on a real 1 mm brain with a roi-128 model
# (windows of 96, smaller than the roi): its roi (one 96^3 window here) against plan capped at 64
# (2 x 2 x 2 windows of 64^3, 0.67 of the roi against 0.75 at 1 mm).
#   bash scripts/bench_random_roi.sh [OUT] [STEPS]      # about 80 minutes on 2 cores at 380 steps
#   RUNS=roi96 bash scripts/bench_random_roi.sh         # one of the three (fixed, random, roi96)
set -euo pipefail
OUT=${1:-runs/bench_random_roi}
STEPS=${2:-380}
M=${MEDSEG:-.venv/bin/medseg}
PY=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-fixed random roi96}
wanted() { [[ " $RUNS " == *" $1 "* ]]; }  # NAME: one of the fits RUNS selects
GRID=(--difficulty hard --extent real --shape 120 120 78 --spacing 2 2 2 --seed 0)
[ -f "$OUT/data/train/demo_truth.json" ] || $M demo-data "${GRID[@]}" --out "$OUT/data/train" --cases 12
[ -f "$OUT/data/test/demo_truth.json" ] || $M demo-data "${GRID[@]}" --out "$OUT/data/test" --cases 4 --start-index 10000
fit() {  # NAME [fit options]
  wanted "$1" || return 0
  local run=$OUT/$1; shift
  [ -f "$run/checkpoints/last.ckpt" ] || $M fit --config configs/swin_unetr_demo.yaml \
    --data.init_args.data_dir "$OUT/data/train" --data.init_args.augment nnunet --trainer.max_steps "$STEPS" \
    --trainer.default_root_dir "$run" --trainer.logger pytorch_lightning.loggers.CSVLogger \
    --trainer.logger.save_dir "$run" --trainer.enable_progress_bar false "$@"
}
fit fixed
fit random --data.init_args.random_roi "[64, 96]"
fit roi96 --model.init_args.roi_size "[96, 96, 96]" --data.init_args.roi_size "[96, 96, 96]"
for run in fixed random; do
  wanted "$run" || continue
  echo "== $run"
  $PY scripts/bench_window.py "$OUT/data/test" --ckpt "$OUT/$run/checkpoints/last.ckpt" \
    --variants roi plan auto roi:bf16 plan:bf16 --json "$OUT/window_$run.json"
done
wanted roi96 || exit 0
echo "== roi96"
$PY scripts/bench_window.py "$OUT/data/test" --ckpt "$OUT/roi96/checkpoints/last.ckpt" --max-window 64 \
  --variants roi plan roi:bf16 plan:bf16 --json "$OUT/window_roi96.json"
