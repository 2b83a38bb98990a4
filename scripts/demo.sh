#!/usr/bin/env bash
# The main job, end to end on the embedded synthetic data:
#   install dependencies -> build -> generate data -> train -> serve -> Retrieve -> stop.
# Usage: scripts/demo.sh            (work files go to ./demo/, build to ./build/)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2 --target twotower_synth twotower_train twotower_server twotower_client

rm -rf demo
echo "== generating the synthetic default data"
build/twotower_synth --out_dir demo/data
echo "== training"
build/twotower_train --config configs/synthetic.textproto --data_dir demo/data \
  --export_dir demo/bundles

echo "== starting the server"
build/twotower_server --bundle demo/bundles/latest --address 127.0.0.1:0 \
  --admin_address 127.0.0.1:0 > demo/server.out 2> demo/server.log &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true' EXIT
address="" admin=""
for _ in $(seq 1 100); do
  if line=$(grep -m1 '^serving model' demo/server.out 2>/dev/null); then
    address=$(sed -E 's/.* on ([^ ]+) \(admin ([^)]+)\).*/\1/' <<<"$line")
    admin=$(sed -E 's/.* on ([^ ]+) \(admin ([^)]+)\).*/\2/' <<<"$line")
    break
  fi
  kill -0 "$server_pid" 2>/dev/null || { cat demo/server.log; exit 1; }
  sleep 0.1
done
[ -n "$address" ] || { echo "server did not become ready"; cat demo/server.log; exit 1; }
echo "$line"

echo "== Retrieve: a known user"
build/twotower_client retrieve --address "$address" --user u00000 --k 10
echo "== Retrieve: a user the model never saw, from features only"
build/twotower_client retrieve --address "$address" --user new-user-1 --k 5 \
  --feature segment=s3 --feature age=num:31 --feature interests=multi:g3
echo "== Status"
build/twotower_client status --admin_address "$admin"

echo "== stopping the server (SIGTERM)"
kill -TERM "$server_pid"
wait "$server_pid"
trap - EXIT
echo "server exited cleanly"
