#!/usr/bin/env bash
# MPDD sweep: every category in one train.py process, the dataset's protocol (256 x 256);
# 6 categories in MVTec AD's layout.
#   script/run_mpdd.sh [extra train.py args...]        e.g. --category tubes --model resnet18
# The root is $MPDD_DATA, else the folder named ${MPDD_NAME:-MPDD} found by script/find_up.sh from the
# current folder, else train.py's default ($DATA); a --dataroot among the extra args wins. Extra args
# come last, so they override the defaults here. PYTHON picks the interpreter.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

root=${MPDD_DATA:-$("$here/find_up.sh" "${MPDD_NAME:-MPDD}" . || true)}
dataroot=()
if [ -n "$root" ]; then
    dataroot=(--dataroot "$root")
else
    echo "$0: no ${MPDD_NAME:-MPDD} folder found from $(pwd); using --dataroot from the arguments or \$DATA" >&2
fi
cmd=("${PYTHON:-python}" "$repo/train.py" --dataset mpdd "${dataroot[@]}" --category all "$@")
echo "${cmd[*]}" >&2
exec "${cmd[@]}"
