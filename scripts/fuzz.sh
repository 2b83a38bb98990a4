#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each for SECONDS (default 20).
# Longer runs: scripts/fuzz.sh 600. Crashes are written to build-fuzz/crash-* and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-20}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTWOTOWER_BUILD_TESTS=OFF \
  -DTWOTOWER_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  "-DCMAKE_CXX_FLAGS=$SAN -fsanitize=fuzzer-no-link" "-DCMAKE_EXE_LINKER_FLAGS=$SAN"
cmake --build build-fuzz -j2 --target table_fuzzer config_fuzzer encoder_fuzzer
for target in table_fuzzer config_fuzzer encoder_fuzzer; do
  mkdir -p "build-fuzz/corpus/$target"
  echo "== $target: ${SECONDS_EACH}s"
  (cd build-fuzz && "./$target" -max_total_time="$SECONDS_EACH" -max_len=4096 -print_final_stats=1 \
     "corpus/$target" 2>&1 | tail -4)
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "fuzz: $target failed"; exit 1; }
done
