# Sourced by scripts/bench_hard.sh and scripts/bench_levers.sh: the `medseg fit` options of the default
# recipe on the hard benchmark, beyond configs/swin_unetr_demo.yaml (which turns N4 off and has no deep
# supervision): N4 bias-field correction (fit's default since 32246dd) and deep supervision (what
# `medseg plan` writes for regions tasks since the ninth measurement of issue 13).
# shellcheck shell=bash
HARD_RECIPE=(--data.init_args.bias_field n4 --model.init_args.net.init_args.deep_supervision 3)
