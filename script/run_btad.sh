#!/usr/bin/env bash
# BTAD sweep: every category in one train.py process, the dataset's protocol (256 x 256);
# products 01, 02, 03.
#   script/run_btad.sh [extra train.py args...]        e.g. --category 02 --model resnet18
# Root, defaults and extra args as script/run.sh documents (datasets/btad.py names them).
exec "$(dirname "$0")/run.sh" btad "$@"
