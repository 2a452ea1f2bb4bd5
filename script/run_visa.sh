#!/usr/bin/env bash
# VisA sweep: every category in one train.py process, the dataset's protocol (256 x 256);
# 12 categories, official 1-class split split_csv/1cls.csv.
#   script/run_visa.sh [extra train.py args...]        e.g. --category pcb1 --model resnet18
# Root, defaults and extra args as script/run.sh documents (datasets/visa.py names them).
exec "$(dirname "$0")/run.sh" visa "$@"
