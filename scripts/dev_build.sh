#!/usr/bin/env bash
# Incremental developer build: the extension lands in python/vlmzoo/ (use PYTHONPATH=python),
# the C++ tests in build/dev. A lock serialises concurrent builds of the same folder.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_BASEDIR="$PWD"
build_dir=${VLMZOO_BUILD_DIR:-build/dev}
mkdir -p build
exec 9>build/.dev_build.lock
flock 9
if [ ! -f "$build_dir/build.ninja" ]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${VLMZOO_BUILD_TYPE:-Release}" \
    -DPython3_EXECUTABLE="$(command -v python3)" ${VLMZOO_CMAKE_ARGS:-}
fi
cmake --build "$build_dir" -j "${VLMZOO_JOBS:-2}" "$@"
