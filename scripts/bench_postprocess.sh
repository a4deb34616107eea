#!/usr/bin/env bash
# Issue 13: post-processing chosen on validation cases (`medseg postprocess`), measured on the held-out
# cases of scripts/bench_hard.sh, against the same models without it.
#   bash scripts/bench_postprocess.sh OUT RUN...
# OUT: bench_hard.sh's output folder; RUN: its run folders (each with checkpoints/last.ckpt and pred/).
# For each RUN: `medseg postprocess` on OUT/data/val-VAL (VAL (8) hard cases from BraTS2021_20000 on,
# generated when missing: neither training nor held-out cases) with OBJECTIVE (both: the mean of voxel-wise
# and lesion-wise Dice), written to RUN/postprocess.json; the HELD_OUT (16) held-out cases predicted with it
# into RUN/pred_pp and scored by `medseg evaluate --lesion-wise`; then scripts/bench_seeds.py on pred and
# pred_pp.
set -euo pipefail
OUT=${1:?usage: bench_postprocess.sh OUT RUN...}; shift
[ $# -gt 0 ] || { echo "usage: bench_postprocess.sh OUT RUN..." >&2; exit 2; }
VAL=${VAL:-8}; HELD_OUT=${HELD_OUT:-16}; OBJECTIVE=${OBJECTIVE:-both}
VAL_DIR="$OUT/data/val-$VAL"; TEST="$OUT/data/test-$HELD_OUT"
M=.venv/bin/medseg
[ -d "$VAL_DIR" ] || $M demo-data --difficulty hard --out "$VAL_DIR" --cases "$VAL" --start-index 20000 --seed 0
for run in "$@"; do
  ckpt="$run/checkpoints/last.ckpt"
  $M postprocess "$VAL_DIR" --ckpt "$ckpt" --objective "$OBJECTIVE" --out "$run/postprocess.json"
  $M predict "$TEST" --ckpt "$ckpt" --postprocess "$run/postprocess.json" --out "$run/pred_pp" --overwrite
  $M evaluate --pred "$run/pred_pp" --label "$TEST" --lesion-wise
done
echo "without post-processing:"
.venv/bin/python scripts/bench_seeds.py "$@"
echo "with post-processing chosen on $VAL_DIR ($OBJECTIVE):"
.venv/bin/python scripts/bench_seeds.py --pred pred_pp "$@"
