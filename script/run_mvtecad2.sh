#!/usr/bin/env bash
# MVTec AD 2 sweep: every category in one train.py process, the dataset's protocol (256 x 256);
# 8 categories; validation/good calibrates, test_public is scored.
#   script/run_mvtecad2.sh [extra train.py args...]        e.g. --category vial --model resnet18
# Root, defaults and extra args as script/run.sh documents (datasets/mvtecad2.py names them).
exec "$(dirname "$0")/run.sh" mvtecad2 "$@"
