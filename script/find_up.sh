#!/usr/bin/env bash
# Print the folder named NAME nearest to START (default: the current folder): START itself or up to 3
# levels below it (symlinks followed, nearest first), else the nearest parent of START that is named
# NAME or holds NAME directly. Other subtrees of the parents are never searched (a parent such as /tmp
# holds other people's folders). Says on stderr which folder it chose. Exit 1 (printing nothing on
# stdout) when no such folder exists.
#   script/find_up.sh NAME [START]        e.g. script/find_up.sh MVTec_AD
set -u
if [ $# -lt 1 ] || [ -z "$1" ]; then
    echo "usage: $0 NAME [START]" >&2
    exit 2
fi
name=$1
path=$(cd "${2:-.}" 2>/dev/null && pwd -P) || { echo "$0: no folder ${2:-.}" >&2; exit 2; }

chosen() {
    echo "$(basename "$0"): using $1" >&2
    echo "$1"
    exit 0
}

if [ "$(basename "$path")" = "$name" ]; then
    chosen "$path"
fi
if [ "$path" != / ]; then  # never walk the whole file system from /
    found=$(find -L "$path" -mindepth 1 -maxdepth 3 -type d -name "$name" -print 2>/dev/null \
            | awk -F/ '{ print NF "\t" $0 }' | sort -n -k1,1 -k2 | head -n 1 | cut -f2-)
    [ -n "$found" ] && chosen "$found"
fi
while [ "$path" != / ]; do
    path=$(dirname "$path")
    [ "$(basename "$path")" = "$name" ] && chosen "$path"
    candidate=${path%/}/$name
    [ -d "$candidate" ] && chosen "$candidate"
done
exit 1
