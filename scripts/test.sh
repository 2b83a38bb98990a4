#!/usr/bin/env bash
# Every test: install dependencies, build (Release, -j2), run the whole CTest suite, then
# build and run the Docker image with podman (docker/test.sh).
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2
ctest --test-dir build --output-on-failure -j2 --timeout 600

# The Docker image, built and run for real with podman (docker/test.sh). It needs the
# project's container tools beside the checkout (../shared/tools/container).
if [ -f ../shared/tools/container/podman-env.sh ] || [ -n "${TWOTOWER_CONTAINER_TOOLS:-}" ]; then
  docker/test.sh
else
  echo "NOTE: docker/test.sh not run: ../shared/tools/container not found (set TWOTOWER_CONTAINER_TOOLS)"
fi
