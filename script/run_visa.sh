#!/usr/bin/env bash
# VisA sweep: every category in one train.py process, the dataset's protocol (256 x 256);
# 12 categories, official 1-class split split_csv/1cls.csv.
#   script/run_visa.sh [extra train.py args...]        e.g. --category pcb1 --model resnet18
# The root is $VISA_DATA, else the folder named ${VISA_NAME:-VisA} found by script/find_up.sh from the
# current folder, else train.py's default ($DATA); a --dataroot among the extra args wins. Extra args
# come last, so they override the defaults here. PYTHON picks the interpreter.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

root=${VISA_DATA:-$("$here/find_up.sh" "${VISA_NAME:-VisA}" . || true)}
dataroot=()
if [ -n "$root" ]; then
    dataroot=(--dataroot "$root")
else
    echo "$0: no ${VISA_NAME:-VisA} folder found from $(pwd); using --dataroot from the arguments or \$DATA" >&2
fi
cmd=("${PYTHON:-python}" "$repo/train.py" --dataset visa "${dataroot[@]}" --category all "$@")
echo "${cmd[*]}" >&2
exec "${cmd[@]}"
