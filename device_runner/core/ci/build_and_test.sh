#!/usr/bin/env bash
# Configures, builds and unit-tests the core with one C++ compiler, in its own build folder:
#   device_runner/core/ci/build_and_test.sh clang++ device_runner/core/build-clang
# (`parbench device build --test` does the same with the default compiler in core/build.) Xcode
# compiles the core with clang, which refuses code GCC accepts, so CI builds it with both.
# PYTHON names the interpreter whose torch wheel provides libtorch (default: python3).
set -euo pipefail
cxx=${1:?usage: build_and_test.sh CXX BUILD_DIR}
build=${2:?usage: build_and_test.sh CXX BUILD_DIR}
core=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
command -v "$cxx" >/dev/null || { echo "build_and_test.sh: no $cxx (Debian: apt-get install -y clang)" >&2; exit 2; }
prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
compiler=$(command -v "$cxx")
if [ ! -f "$build/build.ninja" ] || ! grep -q "CMAKE_CXX_COMPILER:[A-Z]*=$compiler\$" "$build/CMakeCache.txt"; then
  rm -rf "$build"
  cmake -G Ninja -S "$core" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$compiler" \
    -DCMAKE_PREFIX_PATH="$prefix"
fi
cmake --build "$build" -- -j "${PARBENCH_BUILD_JOBS:-2}"
ctest --test-dir "$build" --output-on-failure
