#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each for SECONDS (default 20).
# Longer runs: scripts/fuzz.sh 600. Crashes are written to build-fuzz/crash-* and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-20}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTWOTOWER_BUILD_TESTS=OFF -DTWOTOWER_WERROR=ON \
  -DTWOTOWER_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  "-DCMAKE_CXX_FLAGS=$SAN -fsanitize=fuzzer-no-link" "-DCMAKE_EXE_LINKER_FLAGS=$SAN"
cmake --build build-fuzz -j2 --target table_fuzzer config_fuzzer encoder_fuzzer bundle_fuzzer
# bundle_fuzzer starts from the files of a valid bundle (it writes them itself).
mkdir -p build-fuzz/corpus/bundle_fuzzer
TWOTOWER_FUZZ_WRITE_SEEDS=build-fuzz/corpus/bundle_fuzzer build-fuzz/bundle_fuzzer
for target in table_fuzzer config_fuzzer encoder_fuzzer bundle_fuzzer; do
  mkdir -p "build-fuzz/corpus/$target"
  max_len=4096
  [ "$target" = bundle_fuzzer ] && max_len=262144  # whole tower files
  echo "== $target: ${SECONDS_EACH}s"
  (cd build-fuzz && "./$target" -max_total_time="$SECONDS_EACH" -max_len="$max_len" -print_final_stats=1 \
     "corpus/$target" 2>&1 | tail -4)
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "fuzz: $target failed"; exit 1; }
done
