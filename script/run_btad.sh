#!/usr/bin/env bash
# BTAD sweep: every category in one train.py process, the dataset's protocol (256 x 256);
# products 01, 02, 03.
#   script/run_btad.sh [extra train.py args...]        e.g. --category 02 --model resnet18
# The root is $BTAD_DATA, else the folder named ${BTAD_NAME:-BTech_Dataset_transformed} found by
# script/find_up.sh from the current folder, else train.py's default ($DATA); a --dataroot among the
# extra args wins. Extra args come last, so they override the defaults here. PYTHON picks the interpreter.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

root=${BTAD_DATA:-$("$here/find_up.sh" "${BTAD_NAME:-BTech_Dataset_transformed}" . || true)}
dataroot=()
if [ -n "$root" ]; then
    dataroot=(--dataroot "$root")
else
    echo "$0: no ${BTAD_NAME:-BTech_Dataset_transformed} folder found from $(pwd);" \
         "using --dataroot from the arguments or \$DATA" >&2
fi
cmd=("${PYTHON:-python}" "$repo/train.py" --dataset btad "${dataroot[@]}" --category all "$@")
echo "${cmd[*]}" >&2
exec "${cmd[@]}"
