# Source me:  source script/setup.sh NAME     e.g.  source script/setup.sh MVTec_AD
# Finds a folder called NAME in the current folder or below (3 levels), else the nearest parent folder
# named NAME or holding it (script/find_up.sh), and exports DATA (train.py's default --dataroot) as its
# absolute path.
_setup_here=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)
if [ $# -lt 1 ] || [ -z "$1" ]; then
    echo "usage: source script/setup.sh NAME   (NAME: MVTec_AD, KolektorSDD, KolektorSDD2, mSTC ...)" >&2
    unset _setup_here
    return 2 2>/dev/null || exit 2
fi
if _setup_found=$("$_setup_here/find_up.sh" "$1" .); then
    export DATA="$_setup_found"
    echo "DATA=$DATA"
    unset _setup_here _setup_found
else
    echo "setup.sh: no folder named '$1' in $(pwd) (or 3 levels below) or in one of its parents; DATA unchanged" >&2
    unset _setup_here _setup_found
    return 1 2>/dev/null || exit 1
fi
