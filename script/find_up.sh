#!/usr/bin/env bash
# Print the first folder named NAME found by searching START (default: the current folder) and then
# each of its parents, looking down to 3 levels below each one (symlinks followed), nearest first.
# Exit 1 (printing nothing) when no such folder exists.
#   script/find_up.sh NAME [START]        e.g. script/find_up.sh MVTec_AD
set -u
if [ $# -lt 1 ] || [ -z "$1" ]; then
    echo "usage: $0 NAME [START]" >&2
    exit 2
fi
name=$1
path=$(cd "${2:-.}" 2>/dev/null && pwd -P) || { echo "$0: no folder ${2:-.}" >&2; exit 2; }
while :; do
    # the folder itself may be the one we look for
    if [ "$(basename "$path")" = "$name" ] && [ -d "$path" ]; then
        echo "$path"
        exit 0
    fi
    if [ "$path" != / ]; then  # never walk the whole file system from /
        found=$(find -L "$path" -mindepth 1 -maxdepth 3 -type d -name "$name" -print 2>/dev/null \
                | awk -F/ '{ print NF "\t" $0 }' | sort -n -k1,1 -k2 | head -n 1 | cut -f2-)
        if [ -n "$found" ]; then
            echo "$found"
            exit 0
        fi
    fi
    [ "$path" = / ] && break
    path=$(dirname "$path")
done
exit 1
