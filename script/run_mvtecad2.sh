#!/usr/bin/env bash
# MVTec AD 2 sweep: every category in one train.py process, the dataset's protocol (256 x 256);
# 8 categories; validation/good calibrates, test_public is scored.
#   script/run_mvtecad2.sh [extra train.py args...]        e.g. --category vial --model resnet18
# The root is $MVTEC2_DATA, else the folder named ${MVTEC2_NAME:-mvtec_ad_2} found by script/find_up.sh from the
# current folder, else train.py's default ($DATA); a --dataroot among the extra args wins. Extra args
# come last, so they override the defaults here. PYTHON picks the interpreter.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

root=${MVTEC2_DATA:-$("$here/find_up.sh" "${MVTEC2_NAME:-mvtec_ad_2}" . || true)}
dataroot=()
if [ -n "$root" ]; then
    dataroot=(--dataroot "$root")
else
    echo "$0: no ${MVTEC2_NAME:-mvtec_ad_2} folder found from $(pwd); using --dataroot from the arguments or \$DATA" >&2
fi
cmd=("${PYTHON:-python}" "$repo/train.py" --dataset mvtecad2 "${dataroot[@]}" --category all "$@")
echo "${cmd[*]}" >&2
exec "${cmd[@]}"
