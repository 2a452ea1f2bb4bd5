#!/usr/bin/env bash
# mSTC: one model for all scenes (5,000 seeded training frames, every 5th test frame, 256 x 256, eps 0.3),
# ResNet-18 with k = 100 and seed 5555 as the authors' script; the headline printed is ROC (the seed's
# table). Prepare the data first:
#   tools/stc_preprocess.sh <folder with training.zip and Testing/> <output folder, e.g. .../mSTC>
#   script/run_stc.sh [extra train.py args...]        e.g. --startidx 2 --seed 1111
# The root is $STC_DATA, else the folder named ${STC_NAME:-mSTC} found by script/find_up.sh from the
# current folder, else train.py's default ($DATA); a --dataroot among the extra args wins. Extra args
# come last and override the defaults. PYTHON picks the interpreter.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

root=${STC_DATA:-$("$here/find_up.sh" "${STC_NAME:-mSTC}" . || true)}
dataroot=()
if [ -n "$root" ]; then
    dataroot=(--dataroot "$root")
else
    echo "$0: no ${STC_NAME:-mSTC} folder found from $(pwd); using --dataroot from the arguments or \$DATA" >&2
fi
cmd=("${PYTHON:-python}" "$repo/train.py" --dataset mstc "${dataroot[@]}" --category mstc \
     --model resnet18 --k 100 --seed 5555 --metric auroc "$@")
echo "${cmd[*]}" >&2
exec "${cmd[@]}"
