#!/usr/bin/env bash
# One dataset's sweep: every category in one train.py process, with the dataset's protocol and defaults.
#   script/run.sh DATASET [extra train.py args...]        e.g. script/run.sh btad --category 02 --model resnet18
# The dataset module (datasets/<name>.py, its DATASET) names the rest: the root is $<X>_DATA (e.g.
# BTAD_DATA), else the folder named ${<X>_NAME:-<its folder name>} found by script/find_up.sh from the
# current folder, else train.py's default ($DATA); a --dataroot among the extra args wins. The dataset's
# sweep flags (e.g. --category all; mSTC: the authors' ResNet-18, k and seed) come first, the extra args
# last, so they override them. PYTHON picks the interpreter.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
py=${PYTHON:-python}
if [ $# -lt 1 ] || [ -z "$1" ] || [ "${1#-}" != "$1" ]; then
    echo "usage: $0 DATASET [extra train.py args...]" >&2
    exit 2
fi
dataset=$1
shift

# Ask the dataset module; $PYTHON first, else python3 when $PYTHON is not an interpreter that answers
# (PYTHON=echo prints the command line alone).
answer=""
for candidate in "$py" python3; do
    answer=$(cd "$repo" && "$candidate" -m datasets.sweep "$dataset" 2>/dev/null) || answer=""
    [ "${answer%%$'\n'*}" = "sweep $dataset" ] && break
    answer=""
done
if [ -z "$answer" ]; then  # say why (an unknown dataset...) in the module's own words
    (cd "$repo" && python3 -m datasets.sweep "$dataset" >/dev/null)
    exit 2
fi
mapfile -t settings <<< "$answer"
env_var=${settings[1]}
name_var=${settings[2]}
name=${!name_var:-${settings[3]}}
sweep_args=("${settings[@]:4}")

root=${!env_var:-$("$here/find_up.sh" "$name" . || true)}
dataroot=()
if [ -n "$root" ]; then
    dataroot=(--dataroot "$root")
else
    echo "$0: no $name folder found from $(pwd); using --dataroot from the arguments or \$DATA" >&2
fi
cmd=("$py" "$repo/train.py" --dataset "$dataset" "${dataroot[@]}" "${sweep_args[@]}" "$@")
echo "${cmd[*]}" >&2
exec "${cmd[@]}"
