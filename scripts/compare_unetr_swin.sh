#!/usr/bin/env bash
# Swin UNETR and UNETR at the same demo budget (150 steps, batch 1, roi 64, AdamW 5e-3), same generated
# training and held-out cases: prints each model's held-out Dice table and times.
#   bash scripts/compare_unetr_swin.sh OUT
set -euo pipefail
out=${1:-compare_run}
cd "$(dirname "$0")/.."
for model in swin_unetr unetr; do
  mkdir -p "$out/$model"
  [ -d "$out/data" ] && [ ! -e "$out/$model/data" ] && ln -s "$(realpath "$out/data")" "$out/$model/data"
  echo "== $model"
  medseg demo --out "$out/$model" --logger csv --config "configs/${model}_demo.yaml" -- --model.init_args.lr 5e-3 \
    | grep -aE "^(region|TC|WT|ET|mean|time)"
  [ -d "$out/data" ] || cp -r "$out/$model/data" "$out/data"
done
