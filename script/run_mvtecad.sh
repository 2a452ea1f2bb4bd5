#!/usr/bin/env bash
# MVTec AD sweep: one train.py process per group (train.py fits and evaluates the group's categories
# in turn with one start-up).
#   script/run_mvtecad.sh {TEX|OBJA|OBJB|ALL} [extra train.py args...]
# The dataset root is $MVTEC_DATA, else the folder named ${MVTEC_NAME:-MVTec_AD} found by
# script/find_up.sh from the current folder, else train.py's default ($DATA); a --dataroot among the
# extra args wins. Extra args come last, so they override the defaults here. PYTHON picks the interpreter.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

TEXTURES="carpet,grid,leather,tile,wood"
OBJECTS_A="bottle,cable,capsule,hazelnut,metal_nut"
OBJECTS_B="pill,screw,toothbrush,transistor,zipper"
case "${1:-}" in
    TEX) target=$TEXTURES ;;
    OBJA) target=$OBJECTS_A ;;
    OBJB) target=$OBJECTS_B ;;
    ALL) target="$TEXTURES,$OBJECTS_A,$OBJECTS_B" ;;
    *) echo "usage: $0 {TEX|OBJA|OBJB|ALL} [extra train.py args...]" >&2; exit 2 ;;
esac
shift

root=${MVTEC_DATA:-$("$here/find_up.sh" "${MVTEC_NAME:-MVTec_AD}" . || true)}
dataroot=()
if [ -n "$root" ]; then
    dataroot=(--dataroot "$root")
else
    echo "$0: no ${MVTEC_NAME:-MVTec_AD} folder found from $(pwd); using --dataroot from the arguments or \$DATA" >&2
fi
cmd=("${PYTHON:-python}" "$repo/train.py" --dataset mvtecad "${dataroot[@]}" --category "$target" "$@")
echo "${cmd[*]}" >&2
exec "${cmd[@]}"
