#!/usr/bin/env bash
# MVTec AD sweep: one train.py process per group (train.py fits and evaluates the group's categories
# in turn with one start-up).
#   script/run_mvtecad.sh {TEX|OBJA|OBJB|ALL} [extra train.py args...]
# Root and extra args as script/run.sh documents ($MVTEC_DATA, else a folder named ${MVTEC_NAME:-MVTec_AD}).
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

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

exec "$here/run.sh" mvtecad --category "$target" "$@"
