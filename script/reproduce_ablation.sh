#!/usr/bin/env bash
# The paper's ablation: every --approx over a range of k for a category list, in one train.py process
# (each image decoded and through the backbone once for the whole grid), with --ci intervals, then the
# figure: the metric against k per approximation with interval bands (tools/ablation_figure.py).
#   script/reproduce_ablation.sh [EXPERIMENT_FOLDER] [extra train.py args...]
# Settings (environment): DATASET (mvtecad), CATEGORIES (all), MODEL (resnet18), APPROX
# (ortho,gaussian,sample), KS (10,25,50,100,200,448: up to F for ResNet-18), SEEDS (1111), METRIC (aupro),
# BOOTSTRAP (1000). MVTec AD is found as script/run.sh finds it ($MVTEC_DATA, else the MVTec_AD folder
# above this one, else $DATA), a dataset without a sweep (synthetic) needs none; extra args go to train.py last (e.g. --dataroot DIR, --device cuda,
# --weights random). Writes EXPERIMENT_FOLDER/results.csv, its variants' folders (metrics and scores, no
# model files) and EXPERIMENT_FOLDER/ablation_<METRIC>.png and .pdf. EXPERIMENT_FOLDER defaults to
# runs/ablation-<date-time>. PYTHON picks the interpreter. Exit status: train.py's, else the figure's.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
py=${PYTHON:-python}

experiment="runs/ablation-$(date +%Y%m%d-%H%M%S)"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    experiment=$1
    shift
fi
metric=${METRIC:-aupro}
dataset=${DATASET:-mvtecad}
runner=("$here/run.sh" "$dataset")  # finds the dataset's folder as its sweep does
if ! (cd "$repo" && "$py" -m datasets.sweep "$dataset" >/dev/null 2>&1); then
    runner=("$py" "$repo/train.py" --dataset "$dataset")  # no sweep (synthetic, folder): train.py itself
fi

"${runner[@]}" --category "${CATEGORIES:-all}" --model "${MODEL:-resnet18}" \
    --approx "${APPROX:-ortho,gaussian,sample}" --k "${KS:-10,25,50,100,200,448}" --seed "${SEEDS:-1111}" \
    --ci --bootstrap "${BOOTSTRAP:-1000}" --no-save-model --experiment "$experiment" "$@" || exit $?
"$py" "$repo/tools/ablation_figure.py" "$experiment/results.csv" --metric "$metric" \
    --out "$experiment/ablation_$metric"
