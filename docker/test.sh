#!/usr/bin/env bash
# Builds and runs the Docker image for real with podman (no Docker engine here):
#  1. builds the image from a clean checkout of HEAD (cold, then cached), checks its size;
#  2. runs the server container on 127.0.0.1 (host network, free ports) and calls Retrieve
#     from the host with the C++ client and the Python client;
#  3. runs trainer containers writing a new bundle to a shared directory, reloads it into
#     the running server while a client keeps calling Retrieve: no failed request, and the
#     model version changes;
#  4. stops the server container with SIGTERM: exit code 0 within a few seconds;
#  5. plays the rendered Kubernetes Deployment with `podman kube play` as 3 replicas
#     (deploy/kubernetes/test.sh);
#  6. prints the image size and the build times.
# Needs the host build (build/twotower_client, build/python) and the container tools of
# ../shared/tools/container (or $TWOTOWER_CONTAINER_TOOLS). Installs podman if missing.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${TWOTOWER_CONTAINER_TOOLS:-$REPO/../shared/tools/container}
CLIENT=$REPO/build/twotower_client
PYTHON_GEN=$REPO/build/python
IMAGE=${TWOTOWER_TEST_IMAGE:-localhost/twotower:test}  # the tag it builds and tests
MAX_IMAGE_MB=200

fail() { echo "docker/test.sh: FAIL: $*" >&2; exit 1; }
[ -f "$TOOLS/podman-env.sh" ] || fail "container tools not found at $TOOLS (set TWOTOWER_CONTAINER_TOOLS)"
[ -x "$CLIENT" ] || fail "$CLIENT missing: build first (scripts/test.sh does)"
[ "$(id -u)" = 0 ] || fail "must run as root (podman rootful, as in ../shared/tools/container)"

WORK=$(mktemp -d /tmp/twotower-docker-XXXXXX)
SERVER=twotower-test-server-$$
cleanup() {
  podman rm -f "$SERVER" >/dev/null 2>&1 || true
  [ -n "${load_pid:-}" ] && kill "$load_pid" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=/dev/null
. "$TOOLS/podman-env.sh"
"$TOOLS/make-base-image.sh" > "$WORK/base-image.log" 2>&1 || { tail -20 "$WORK/base-image.log"; fail "base image"; }

echo "== 1. build from a clean checkout of HEAD"
git clone -q "$REPO" "$WORK/src"
cd "$WORK/src"
t0=$(date +%s.%N)
podman build --pull=never --network=host --no-cache --format docker -f docker/Dockerfile -t "$IMAGE" . \
  > "$WORK/build-cold.log" 2>&1 || { tail -30 "$WORK/build-cold.log"; fail "cold build"; }
t1=$(date +%s.%N)
podman build --pull=never --network=host --format docker -f docker/Dockerfile -t "$IMAGE" . \
  > "$WORK/build-cached.log" 2>&1 || { tail -30 "$WORK/build-cached.log"; fail "cached build"; }
t2=$(date +%s.%N)
cold=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
cached=$(awk -v a="$t1" -v b="$t2" 'BEGIN{printf "%.1f", b-a}')
size_bytes=$(podman image inspect --format '{{.Size}}' "$IMAGE")
size_mb=$(awk -v s="$size_bytes" 'BEGIN{printf "%.1f", s/1e6}')
echo "image $IMAGE: ${size_mb} MB; cold build ${cold} s, cached build ${cached} s"
awk -v s="$size_mb" -v m="$MAX_IMAGE_MB" 'BEGIN{exit !(s < m)}' || fail "image ${size_mb} MB >= ${MAX_IMAGE_MB} MB"
if podman run --rm --entrypoint /bin/sh "$IMAGE" -c 'command -v gcc g++ cc c++ cmake' >/dev/null 2>&1; then
  fail "a compiler is in the runtime image"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); ADMIN_PORT=$(free_port)
while [ "$ADMIN_PORT" = "$PORT" ]; do ADMIN_PORT=$(free_port); done
ADDR=127.0.0.1:$PORT; ADMIN=127.0.0.1:$ADMIN_PORT
SHARED=$WORK/shared
mkdir -p "$SHARED" && chown 10001:10001 "$SHARED"

echo "== 2. server container on $ADDR (admin $ADMIN)"
podman run -d --name "$SERVER" --network=host --health-interval=disable \
  -e TWOTOWER_ADDRESS="$ADDR" -e TWOTOWER_ADMIN_ADDRESS="$ADMIN" \
  -v "$SHARED:/shared:ro" "$IMAGE" > /dev/null
for _ in $(seq 1 100); do
  "$CLIENT" health --address "$ADDR" --timeout_ms 500 > /dev/null 2>&1 && break
  sleep 0.2
done
"$CLIENT" health --address "$ADDR" || { podman logs "$SERVER" | tail -20; fail "server not healthy"; }
podman healthcheck run "$SERVER" > /dev/null || fail "the image's HEALTHCHECK failed"
"$CLIENT" retrieve --address "$ADDR" --user u00001 --k 5 | tee "$WORK/retrieve.txt"
first_version=$(awk '/^model /{print $2; exit}' "$WORK/retrieve.txt" | tr -d ,)
[ -n "$first_version" ] || fail "no model version in the answer"
PYTHONPATH="$REPO/client/python:$PYTHON_GEN" /usr/bin/python3 -m twotower.client \
  --address "$ADDR" --user u00001 --k 5 | tee "$WORK/retrieve-python.txt"
grep -q "$first_version" "$WORK/retrieve-python.txt" || fail "python client: no answer from $first_version"

echo "== 3. trainer containers write a new bundle; reload under load"
podman run --rm --network=host -v "$SHARED:/shared" "$IMAGE" synth --out_dir /shared/data --seed 7 > /dev/null
podman run --rm --network=host -v "$SHARED:/shared" "$IMAGE" \
  train --config configs/synthetic.textproto --data_dir /shared/data --export_dir /shared/bundles --epochs 2 \
  > "$WORK/train.log" || { tail -20 "$WORK/train.log"; fail "trainer container"; }
new_version=$(readlink "$SHARED/bundles/latest")
[ -n "$new_version" ] || fail "the trainer wrote no bundle"
( ok=0; failed=0
  while [ ! -f "$WORK/stop-load" ]; do
    if "$CLIENT" retrieve --address "$ADDR" --user u00002 --k 10 > /dev/null 2>&1; then ok=$((ok+1)); else failed=$((failed+1)); fi
  done
  echo "$ok $failed" > "$WORK/load-result" ) &
load_pid=$!
sleep 1
"$CLIENT" reload --admin_address "$ADMIN" --bundle "/shared/bundles/$new_version"
sleep 1
touch "$WORK/stop-load"; wait "$load_pid"; load_pid=
read -r ok failed < "$WORK/load-result"
echo "requests during the reload: $ok ok, $failed failed"
[ "$failed" = 0 ] || fail "$failed requests failed during the reload"
[ "$ok" -gt 0 ] || fail "no request ran during the reload"
now=$("$CLIENT" retrieve --address "$ADDR" --user u00002 --k 1 | awk '/^model /{print $2; exit}' | tr -d ,)
[ "$now" = "$new_version" ] || fail "serving $now, expected $new_version"
echo "model version: $first_version -> $now"

echo "== 4. SIGTERM"
t0=$(date +%s.%N)
podman kill --signal TERM "$SERVER" > /dev/null
code=$(timeout 10 podman wait "$SERVER") || fail "server container did not exit within 10 s"
took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
echo "server container exited with $code after ${took} s"
[ "$code" = 0 ] || { podman logs "$SERVER" | tail -20; fail "exit code $code"; }
awk -v t="$took" 'BEGIN{exit !(t < 5)}' || fail "took ${took} s to stop"

echo "== 5. the Kubernetes Deployment as 3 replicas (podman kube play)"
"$REPO/deploy/kubernetes/test.sh" "$IMAGE"

echo "== 6. summary"
echo "image size ${size_mb} MB (limit ${MAX_IMAGE_MB} MB); cold build ${cold} s; cached build ${cached} s"
echo "docker/test.sh: PASS"
