#!/usr/bin/env bash
# Build tools/kernel_parts.c against this tree's src/noah/csrc/train.c and run it: for the two head
# shapes of issue 9's target (ResNet18's and MobileNetV2 x0.35's) or for the arguments given
# (C M N KEY_RATIO H W [BATCH [REPEATS]]). Needs gcc and Python's headers and shared library.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
libdir=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
version=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("LDVERSION"))')
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
gcc -O3 -std=c11 -fno-math-errno -fopenmp -I"$here/../src/noah/csrc" -I"$include" "$here/kernel_parts.c" \
    -o "$build/kernel_parts" -L"$libdir" -lpython"$version" -lm -Wl,-rpath,"$libdir"
if [ $# -gt 0 ]; then
    "$build/kernel_parts" "$@"
else
    "$build/kernel_parts" 512 1000 4 0.5 7 7
    "$build/kernel_parts" 1280 1000 8 0.25 7 7
fi
