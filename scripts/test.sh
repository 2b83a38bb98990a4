#!/usr/bin/env bash
# Every test: install dependencies, build (Release, -j2), run the whole CTest suite, run it
# again on a sanitizer build (ASan + UBSan), fuzz the parsers briefly (libFuzzer), then
# build and run the Docker image with podman (docker/test.sh).
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DTWOTOWER_WERROR=ON
cmake --build build -j2
ctest --test-dir build --output-on-failure -j2 --timeout 600

# The same tests on an AddressSanitizer + UndefinedBehaviorSanitizer build (leak checks
# on): memory errors and undefined behaviour fail the run.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTWOTOWER_WERROR=ON \
  "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
  "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined"
cmake --build build-asan -j2
ctest --test-dir build-asan --output-on-failure -j2 --timeout 900

# Fuzz the parsers of untrusted bytes (tables, configs, bundle feature state) briefly.
scripts/fuzz.sh 20

# The Docker image, built and run for real with podman (docker/test.sh). It needs the
# project's container tools beside the checkout (../shared/tools/container).
if [ -f ../shared/tools/container/podman-env.sh ] || [ -n "${TWOTOWER_CONTAINER_TOOLS:-}" ]; then
  docker/test.sh
else
  echo "NOTE: docker/test.sh not run: ../shared/tools/container not found (set TWOTOWER_CONTAINER_TOOLS)"
fi
