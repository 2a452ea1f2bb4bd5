#!/usr/bin/env bash
# Preprocess the distributed ShanghaiTech Campus archives into the mSTC frame folders.
#   tools/stc_preprocess.sh <archives folder> <output folder> [--workers N] [--quality Q]
# <archives folder> holds training.zip and Testing/{frames_part1,frames_part2,test_pixel_mask,
# test_frame_mask}.zip; the output folder is then the --dataroot of `train.py --dataset mstc`.
# Idempotent: rerun to finish an interrupted run. Details: tools/stc_preprocess.py.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -lt 2 ]; then
    echo "usage: $0 <archives folder> <output folder> [--workers N] [--quality Q]" >&2
    exit 2
fi
exec "${PYTHON:-python}" "$here/stc_preprocess.py" "$@"
