#!/usr/bin/env bash
# Issue 13: the levers of the recipe measured against the default recipe on the hard benchmark of
# scripts/bench_hard.sh (same data, same HELD_OUT held-out cases, fixed steps and seeds), each prediction
# scored by `medseg evaluate --lesion-wise` (and its ECE where probabilities are written).
#   bash scripts/bench_hard.sh OUT nnunet && bash scripts/bench_levers.sh OUT [RUN]
# RUN: the default recipe's seed-0 run (default OUT/nnunet). Levers:
# - a 3-fold cross-validation of the default recipe on OUT/data/train (`medseg cv`, each fold
#   MEDSEG_STEPS steps on two thirds of the cases: 3x the training), in OUT/cv-default; its out-of-fold
#   predictions choose the post-processing and fit the temperatures;
# - the fold ensemble on the held-out cases, without and with that post-processing (ens, ens_pp);
# - the single model with the post-processing chosen out of fold (single_pp);
# - calibration: temperatures for RUN fitted on VAL (8) separate hard cases (`medseg calibrate`), and the
#   held-out ECE before and after, of the single model (single_prob_raw, single_prob_cal) and of the
#   ensemble (ens: raw; ens_pp: the out-of-fold temperatures);
# - the schedule: constant learning rate after the warm-up instead of the cosine decay (OUT/nnunet-constant).
# Predictions go to OUT/levers/NAME. Mirroring at test time (--tta) and the sliding window's blending are
# not here: docs/benchmarks.md measures them on scripts/bench_hard.sh's runs (eleventh and ninth measurements).
set -euo pipefail
OUT=${1:?usage: bench_levers.sh OUT [RUN]}; RUN=${2:-$OUT/nnunet}
MEDSEG_STEPS=${MEDSEG_STEPS:-380}; HELD_OUT=${HELD_OUT:-16}; VAL=${VAL:-8}
TEST="$OUT/data/test-$HELD_OUT"; VAL_DIR="$OUT/data/val-$VAL"; CV="$OUT/cv-default"
M=.venv/bin/medseg
. "$(dirname "$0")/hard_recipe.sh"  # HARD_RECIPE: the default recipe's fit options
CK="$RUN/checkpoints/last.ckpt"
[ -f "$CK" ] || { echo "bench_levers.sh: $CK is missing: run scripts/bench_hard.sh $OUT nnunet first" >&2; exit 2; }
predict() {
  local name=$1; shift
  $M predict "$TEST" --out "$OUT/levers/$name" --overwrite "$@"
  echo "== $name"; $M evaluate --pred "$OUT/levers/$name" --label "$TEST" --lesion-wise
}

$M cv --config configs/swin_unetr_demo.yaml --folds 3 --out "$CV" -- --data.init_args.data_dir "$OUT/data/train" \
  --data.init_args.augment nnunet --trainer.max_steps "$MEDSEG_STEPS" --trainer.enable_progress_bar false \
  --trainer.logger pytorch_lightning.loggers.CSVLogger --trainer.logger.save_dir "$CV/logs" \
  --seed_everything 0 --data.init_args.seed 0 "${HARD_RECIPE[@]}"
FOLDS=("$CV"/fold_{0,1,2}/checkpoints/last.ckpt)
predict ens --ckpt "${FOLDS[@]}" --no-postprocess --probabilities --no-calibration
predict ens_pp --ckpt "${FOLDS[@]}" --probabilities
predict single_pp --ckpt "$CK" --postprocess "$CV/fold_0/checkpoints/postprocess.json"

[ -d "$VAL_DIR" ] || $M demo-data --difficulty hard --out "$VAL_DIR" --cases "$VAL" --start-index 20000 --seed 0
$M calibrate "$VAL_DIR" --ckpt "$CK" --out "$OUT/levers/single_calibration.json"
predict single_prob_raw --ckpt "$CK" --no-postprocess --probabilities --no-calibration
predict single_prob_cal --ckpt "$CK" --no-postprocess --probabilities --calibration "$OUT/levers/single_calibration.json"

TAG=constant FIT_ARGS="--model.init_args.schedule constant" MEDSEG_STEPS=$MEDSEG_STEPS HELD_OUT=$HELD_OUT \
  bash "$(dirname "$0")/bench_hard.sh" "$OUT" nnunet
