#!/usr/bin/env bash
# Build tools/kernel_parts.c against this tree's src/noah/csrc/train.c and run it: for the two head
# shapes of issue 9's target (ResNet18's and MobileNetV2 x0.35's) or for the arguments given
# (C M N KEY_RATIO H W [BATCH [REPEATS]]). With --against OLD_TRAIN_C, another version of train.c
# (one with the PART_* macros, use_group and the features read through TrainJob.xs, as from commit
# 066a253; its common.h and train.h are taken from beside it if there, else from this tree) runs in the same process, rounds alternating, and each part gets a
# new/old ratio:
#   git show HEAD~1:src/noah/csrc/train.c > /tmp/old/train.c && tools/kernel_parts.sh --against /tmp/old/train.c
# Needs gcc and Python's headers and shared library (train.c's entry points link against it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
csrc="$here/../src/noah/csrc"
against=""
if [ "${1:-}" = "--against" ]; then
    against=$(realpath "${2:?--against needs the path of another train.c}")
    shift 2
fi
python=${PYTHON:-python3}
include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
libdir=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
version=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("LDVERSION"))')
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
flags=(-O3 -std=c11 -fno-math-errno -fopenmp -I"$csrc" -I"$include")
link=(-L"$libdir" -lpython"$version" -lm -Wl,-rpath,"$libdir")
if [ -z "$against" ]; then
    gcc "${flags[@]}" "$here/kernel_parts.c" -o "$build/kernel_parts" "${link[@]}"
else
    # one object per build, the kernel's Python entry points renamed so that both link; the new
    # build's main runs the old build's rounds too
    for which in old new; do
        source="$csrc/train.c" role=-DPARTS_AGAINST
        [ "$which" = old ] && source="$against" role=-DPARTS_LIBRARY
        gcc "${flags[@]}" -c "$here/kernel_parts.c" -o "$build/$which.o" "$role" \
            -DTRAIN_SOURCE="\"$source\"" -DPARTS_ROUND=parts_round_$which -Dnoah_train_forward=${which}_forward \
            -Dnoah_train_backward=${which}_backward -Dnoah_train_tiles_shape=${which}_tiles_shape
    done
    gcc "${flags[@]}" "$build/old.o" "$build/new.o" -o "$build/kernel_parts" "${link[@]}"
fi
if [ $# -gt 0 ]; then
    "$build/kernel_parts" "$@"
else
    "$build/kernel_parts" 512 1000 4 0.5 7 7
    "$build/kernel_parts" 1280 1000 8 0.25 7 7
fi
