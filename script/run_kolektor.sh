#!/usr/bin/env bash
# KolektorSDD (three folds, official split file) then KolektorSDD2, ResNet-18 with k = 100 as the paper;
# the headline printed is ROC (--metric auroc), the seed's table (every metric lands in the results CSV).
#   script/run_kolektor.sh [extra train.py args...]
# Roots: $KOLEKTOR_DATA, else the folder named KolektorSDD found by script/find_up.sh from the current
# folder (its split file is KolektorSDD-training-splits/split.pyb beside it); $KOLEKTOR2_DATA, else the
# folder named KolektorSDD2. A dataset whose root is not found is skipped with a message (exit 1 at the
# end). Extra args come last and override the defaults (do not pass --dataroot: the two datasets have
# different roots). Each runs as script/run.sh DATASET (the flags above are the datasets' sweep flags,
# datasets/kolektor.py and kolektor2.py). PYTHON picks the interpreter. Exit status: the first failure's, else 0.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
status=0

run() {  # script/run.sh prints the train.py command it runs
    "$@"
    local rc=$?
    if [ $rc -ne 0 ] && [ $status -eq 0 ]; then status=$rc; fi
}

ksdd=${KOLEKTOR_DATA:-$("$here/find_up.sh" KolektorSDD . || true)}
if [ -n "$ksdd" ]; then
    KOLEKTOR_DATA=$ksdd run "$here/run.sh" kolektor "$@"
else
    echo "$0: no KolektorSDD folder found from $(pwd) (set KOLEKTOR_DATA); skipping KolektorSDD" >&2
    status=1
fi

ksdd2=${KOLEKTOR2_DATA:-$("$here/find_up.sh" KolektorSDD2 . || true)}
if [ -n "$ksdd2" ]; then
    KOLEKTOR2_DATA=$ksdd2 run "$here/run.sh" kolektor2 "$@"
else
    echo "$0: no KolektorSDD2 folder found from $(pwd) (set KOLEKTOR2_DATA); skipping KolektorSDD2" >&2
    [ $status -eq 0 ] && status=1
fi
exit $status
