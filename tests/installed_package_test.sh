#!/usr/bin/env bash
# Installs the build into a temporary prefix and builds examples/ (a project of its own)
# against it with find_package(twotower): the install rules and the exported package work.
# Usage: installed_package_test.sh SOURCE_DIR BINARY_DIR [CMAKE ARGS for the example...]
# (the build's compiler flags: a sanitizer build's library needs them in its users too)
set -euo pipefail
source_dir=$1 binary_dir=$2
shift 2
work=$(mktemp -d /tmp/twotower-install-XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake --install "$binary_dir" --prefix "$work/prefix" > "$work/install.log"
for file in bin/twotower_server bin/twotower_train bin/twotower_client share/twotower/service_config.json \
            share/twotower/proto/twotower/v1/retrieval.proto include/twotower/v1/retrieval.grpc.pb.h; do
  [ -e "$work/prefix/$file" ] || { echo "not installed: $file"; exit 1; }
done
cmake -S "$source_dir/examples" -B "$work/example" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release "$@" > "$work/configure.log" ||
  { cat "$work/configure.log"; exit 1; }
cmake --build "$work/example" > "$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
# The example's usage line: it runs.
set +e
"$work/example/retrieve" 2> "$work/usage.txt"
code=$?
set -e
[ "$code" = 2 ] && grep -q '^usage:' "$work/usage.txt" || { echo "retrieve: exit $code"; cat "$work/usage.txt"; exit 1; }
echo "installed package: PASS"
