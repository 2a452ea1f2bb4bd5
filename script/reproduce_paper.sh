#!/usr/bin/env bash
# Every experiment behind the paper's tables, then its published figures beside this run's:
#   script/reproduce_paper.sh [EXPERIMENT_FOLDER] [extra train.py args...]
# 1. MVTec AD, all 15 categories, WideResNet-50-2 with k = 300 (PRO and ROC)   script/run_mvtecad.sh ALL
# 2. KolektorSDD's three folds and KolektorSDD2, ResNet-18 with k = 100 (ROC)  script/run_kolektor.sh
# 3. mSTC, ResNet-18 with k = 100, seed 5555 (ROC)                               script/run_stc.sh
# 4. tools/summarize.py --paper on the experiment's results.csv, printed and written to
#    EXPERIMENT_FOLDER/paper_comparison.md.
# Each dataset is found as its script documents ($MVTEC_DATA, $KOLEKTOR_DATA, $KOLEKTOR2_DATA, $STC_DATA,
# else the folder by name above the current folder); the ImageNet weights are downloaded once (or copied
# beforehand, see README). EXPERIMENT_FOLDER defaults to runs/paper-<date-time>. A dataset that is missing
# or fails is reported and the others still run; its figures show as "-" in the comparison. Extra args go
# to every train.py (e.g. --device cuda --workers 8). PYTHON picks the interpreter. Exit status: the first
# failure's, else 0.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
py=${PYTHON:-python}

experiment="runs/paper-$(date +%Y%m%d-%H%M%S)"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    experiment=$1
    shift
fi
status=0

step() {
    echo "== $*" >&2
    "$@"
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "$0: failed ($rc): $*" >&2
        [ $status -eq 0 ] && status=$rc
    fi
}

step "$here/run_mvtecad.sh" ALL --model wide_resnet50_2 --k 300 --metric auproc --experiment "$experiment" "$@"
step "$here/run_kolektor.sh" --experiment "$experiment" "$@"
step "$here/run_stc.sh" --experiment "$experiment" "$@"
if [ -f "$experiment/results.csv" ]; then
    step "$py" "$repo/tools/summarize.py" "$experiment/results.csv" --paper --out "$experiment/paper_comparison.md"
else
    echo "$0: no experiment finished: nothing to compare ($experiment/results.csv does not exist)" >&2
    [ $status -eq 0 ] && status=1
fi
exit $status
