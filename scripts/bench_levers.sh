#!/usr/bin/env bash
# Issue 13: each lever of the recipe measured alone on the hard demo data, after scripts/bench_hard.sh OUT
# has trained the default recipe (OUT/nnunet) and written the data (OUT/data/train, OUT/data/test).
# Fixed steps and seeds throughout; every prediction scored by `medseg evaluate --lesion-wise`.
#   bash scripts/bench_hard.sh OUT monai nnunet light && bash scripts/bench_levers.sh OUT
# Levers: sliding-window blending, TTA, the learning-rate schedule (constant after warm-up instead of
# cosine), a 3-fold cross-validation (each fold 380 steps: 3x the budget) whose out-of-fold predictions
# choose the post-processing and fit the calibration, the fold ensemble with and without post-processing
# and TTA, and the calibration's ECE on the held-out cases (temperatures from 4 separate validation cases
# for the single model, from the out-of-fold probabilities for the folds).
set -euo pipefail
D=${1:-runs/bench_hard}
M=.venv/bin/medseg
T=$D/data/test
CK=$D/nnunet/checkpoints/last.ckpt
FOLDS=$(for k in 0 1 2; do echo "$D/cv/fold_$k/checkpoints/last.ckpt"; done)
PP=$D/cv/fold_0/checkpoints/postprocess.json
score() { echo "== $1"; $M evaluate --pred "$D/$1" --label "$T" --lesion-wise; }
predict() { local out=$1; shift; $M predict "$T" --out "$D/$out" --overwrite "$@"; score "$out"; }

predict nnunet_gauss --ckpt "$CK" --mode gaussian --overlap 0.5
predict nnunet_tta --ckpt "$CK" --tta
run=$D/nnunet_constant
[ -f "$run/checkpoints/last.ckpt" ] || $M fit --config configs/swin_unetr_demo.yaml --data.init_args.data_dir "$D/data/train" \
  --data.init_args.augment nnunet --model.init_args.schedule constant --trainer.max_steps 380 \
  --trainer.default_root_dir "$run" --trainer.logger pytorch_lightning.loggers.CSVLogger \
  --trainer.logger.save_dir "$run" --trainer.enable_progress_bar false
predict nnunet_constant/pred --ckpt "$run/checkpoints/last.ckpt"
$M cv --config configs/swin_unetr_demo.yaml --folds 3 --out "$D/cv" -- --data.init_args.data_dir "$D/data/train" \
  --data.init_args.augment nnunet --trainer.max_steps 380 --trainer.logger pytorch_lightning.loggers.CSVLogger \
  --trainer.logger.save_dir "$D/cv/logs" --trainer.enable_progress_bar false
predict single_pp --ckpt "$CK" --postprocess "$PP"
predict single_pp_tta --ckpt "$CK" --postprocess "$PP" --tta
predict ens_nopp --ckpt $FOLDS --no-postprocess
predict ens_pp --ckpt $FOLDS
predict ens_pp_tta --ckpt $FOLDS --tta
[ -d "$D/data/val" ] || $M demo-data --difficulty hard --out "$D/data/val" --cases 4 --start-index 20000 --seed 0
$M calibrate "$D/data/val" --ckpt "$CK" --out "$D/single_calibration.json"
predict single_prob_raw --ckpt "$CK" --probabilities --no-calibration --no-postprocess
predict single_prob_cal --ckpt "$CK" --probabilities --calibration "$D/single_calibration.json" --no-postprocess
predict ens_prob_raw --ckpt $FOLDS --probabilities --no-calibration
predict ens_prob_cal --ckpt $FOLDS --probabilities
