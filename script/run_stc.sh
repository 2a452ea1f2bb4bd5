#!/usr/bin/env bash
# mSTC: one model for all scenes (5,000 seeded training frames, every 5th test frame, 256 x 256, eps 0.3),
# ResNet-18 with k = 100 and seed 5555 as the authors' script; the headline printed is ROC (the seed's
# table). Prepare the data first:
#   tools/stc_preprocess.sh <folder with training.zip and Testing/> <output folder, e.g. .../mSTC>
#   script/run_stc.sh [extra train.py args...]        e.g. --startidx 2 --seed 1111
# Root, defaults and extra args as script/run.sh documents (datasets/stc.py names them).
exec "$(dirname "$0")/run.sh" mstc "$@"
