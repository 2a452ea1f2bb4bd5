#!/usr/bin/env bash
# MPDD sweep: every category in one train.py process, the dataset's protocol (256 x 256);
# 6 categories in MVTec AD's layout.
#   script/run_mpdd.sh [extra train.py args...]        e.g. --category tubes --model resnet18
# Root, defaults and extra args as script/run.sh documents (datasets/mpdd.py names them).
exec "$(dirname "$0")/run.sh" mpdd "$@"
