#!/usr/bin/env bash
# Plays the rendered server Deployment of deploy/kubernetes with `podman kube play` as 3
# replicas of the image and checks that each one serves the pinned model:
#  1. copies the image's baked-in bundle to a named volume (the claim's stand-in) and pins
#     its version the way docs/DEPLOY.md says: the `version=` line of kustomization.yaml
#     (in a copy), then renders with `kubectl kustomize`;
#  2. derives one file per replica from the rendered Deployment and plays each: podman
#     4.3 plays a Deployment's replicas as identical pods, and on the host network (the
#     only network these machines' tests use) identical pods would all bind the same
#     port, so each replica is played under its own name with its own ports;
#  3. waits until each is SERVING (health of twotower.v1.Retrieval, from the host), checks
#     Retrieve answers from the pinned version, through the C++ client on the host and,
#     over all 3 replicas, with client/service_config.json (round_robin) both from the
#     host and from the copy the image ships; admin calls need the token from the Secret;
#  4. stops the pods (SIGTERM: each server drains and exits 0) and removes everything.
# What podman 4.3 does not do and the cluster does: it ignores gRPC probes, preStop and
# subPath (the item log gets a volume of its own here, without the init container that
# makes its directory), and it mounts a Secret from a podman secret that holds the
# Secret's YAML.
#
# Usage: deploy/kubernetes/test.sh [IMAGE]   (default localhost/twotower:test, the image
# docker/test.sh builds; docker/test.sh calls this). Needs root, kubectl, podman (the
# container tools of ../shared/tools/container, or $TWOTOWER_CONTAINER_TOOLS), Debian's
# python3 with python3-yaml, and the host build (build/twotower_client).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE=${1:-localhost/twotower:test}
TOOLS=${TWOTOWER_CONTAINER_TOOLS:-$REPO/../shared/tools/container}
CLIENT=$REPO/build/twotower_client
PYTHON=${TWOTOWER_PYTHON:-/usr/bin/python3}
REPLICAS=3

fail() { echo "deploy/kubernetes/test.sh: FAIL: $*" >&2; exit 1; }
if ! command -v kubectl > /dev/null; then
  echo "NOTE: kubectl is not installed: the podman kube play check of deploy/kubernetes is skipped"
  exit 0
fi
[ -f "$TOOLS/podman-env.sh" ] || fail "container tools not found at $TOOLS (set TWOTOWER_CONTAINER_TOOLS)"
[ -x "$CLIENT" ] || fail "$CLIENT missing: build first"
[ "$(id -u)" = 0 ] || fail "must run as root (podman rootful)"
# shellcheck source=/dev/null
. "$TOOLS/podman-env.sh"
podman image exists "$IMAGE" || fail "no image $IMAGE: build it first (docker/test.sh does)"

WORK=$(mktemp -d /tmp/twotower-kube-XXXXXX)
PREFIX=twotower-kube-$$
BUNDLES=$PREFIX-bundles
ITEM_LOG=$PREFIX-item-log
SECRET=$PREFIX-admin-token
cleanup() {
  for f in "$WORK"/replica-*.yaml; do
    [ -f "$f" ] && podman kube down "$f" > /dev/null 2>&1 || true
  done
  # kube play keeps the Secret's files in a volume named after it.
  podman volume rm -f "$BUNDLES" "$ITEM_LOG" "$SECRET" > /dev/null 2>&1 || true
  podman secret rm "$SECRET" > /dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== kube 1. a bundle on the volume; pin its version; render"
podman volume create "$BUNDLES" > /dev/null
podman volume create "$ITEM_LOG" > /dev/null
# As root in a throwaway container: the volume's root belongs to the image's user, as the
# guide asks of the cluster's volume (the trainer and the init container write there).
version=$(podman run --rm --no-healthcheck --user 0 --entrypoint /bin/sh -v "$BUNDLES:/bundles" -v "$ITEM_LOG:/item-log" "$IMAGE" -c \
  'v=$(basename "$(readlink /opt/twotower/bundles/latest)") && cp -a "/opt/twotower/bundles/$v" /bundles/ &&
   chown -R 10001:10001 /bundles /item-log && echo "$v"')
[ -n "$version" ] || fail "no bundle in the image"
cp -r "$REPO/deploy/kubernetes" "$WORK/kubernetes"
sed -i "s/^\( *- version=\).*/\1$version/" "$WORK/kubernetes/kustomization.yaml"
grep -q "^ *- version=$version\$" "$WORK/kubernetes/kustomization.yaml" || fail "could not pin $version"
kubectl kustomize "$WORK/kubernetes" > "$WORK/rendered.yaml" || fail "kubectl kustomize"
echo "pinned model version $version"

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ports=(); admin_ports=()
while [ ${#ports[@]} -lt $((3 * REPLICAS)) ]; do
  p=$(free_port)
  case " ${ports[*]} " in *" $p "*) ;; *) ports+=("$p") ;; esac
done
metrics_ports=("${ports[@]:$((2 * REPLICAS))}")
admin_ports=("${ports[@]:REPLICAS:REPLICAS}"); ports=("${ports[@]:0:REPLICAS}")

echo "== kube 2. play the rendered Deployment as $REPLICAS replicas"
"$PYTHON" - "$WORK" "$PREFIX" "$IMAGE" "$version" "$BUNDLES" "$ITEM_LOG" "$SECRET" \
  "${ports[*]}" "${admin_ports[*]}" "${metrics_ports[*]}" <<'EOF' || fail "could not derive the replicas from the render"
import copy, sys, yaml
work, prefix, image, version, bundles, item_log, secret, ports, admin_ports, metrics_ports = sys.argv[1:]
ports, admin_ports, metrics_ports = ports.split(), admin_ports.split(), metrics_ports.split()
docs = [d for d in yaml.safe_load_all(open(work + "/rendered.yaml")) if d]
deployment = [d for d in docs if d["kind"] == "Deployment"][0]
claim = [d for d in docs if d["kind"] == "PersistentVolumeClaim"][0]["metadata"]["name"]
server = deployment["spec"]["template"]["spec"]["containers"][0]
env = {e["name"]: e.get("value") for e in server["env"]}
assert env["TWOTOWER_BUNDLE"] == "/bundles/" + version, env["TWOTOWER_BUNDLE"]
for i, (port, admin_port, metrics_port) in enumerate(zip(ports, admin_ports, metrics_ports)):
    d = copy.deepcopy(deployment)
    d["metadata"]["name"] = "%s-%d" % (prefix, i)
    d["spec"]["replicas"] = 1
    pod = d["spec"]["template"]["spec"]
    pod["hostNetwork"] = True
    # The init container makes the item log's directory for the subPath mount, which
    # podman ignores (below); and podman 4.3 fails to remove a finished init container
    # ("cannot remove container ... as it is running").
    assert pod.pop("initContainers")
    pod["containers"][0]["image"] = image
    c = pod["containers"][0]
    for e in c["env"]:
        if e["name"] == "TWOTOWER_ADDRESS":
            e["value"] = "127.0.0.1:" + port
        if e["name"] == "TWOTOWER_ADMIN_ADDRESS":
            e["value"] = "127.0.0.1:" + admin_port
    c["args"] = ["--metrics_address=127.0.0.1:" + metrics_port if a.startswith("--metrics_address=") else a
                 for a in c["args"]]
    c.pop("ports")  # host network: podman refuses port mappings there
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        c[probe]["grpc"]["port"] = int(port)
    # podman 4.3 ignores subPath: the item log gets a volume of its own.
    for m in c["volumeMounts"]:
        if m.pop("subPath", None) is not None:
            m["name"] = "item-log"
    for v in pod["volumes"]:
        if v.get("persistentVolumeClaim", {}).get("claimName") == claim:
            v["persistentVolumeClaim"]["claimName"] = bundles
        if "secret" in v:
            v["secret"]["secretName"] = secret
            v["secret"]["optional"] = False  # podman 4.3 dereferences it unchecked
    pod["volumes"].append({"name": "item-log", "persistentVolumeClaim": {"claimName": item_log}})
    with open("%s/replica-%d.yaml" % (work, i), "w") as f:
        yaml.safe_dump(d, f)
EOF
token=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\ndata:\n  token: %s\n' \
  "$SECRET" "$(printf %s "$token" | base64 -w0)" > "$WORK/secret.yaml"
podman secret create "$SECRET" "$WORK/secret.yaml" > /dev/null
for i in $(seq 0 $((REPLICAS - 1))); do
  podman kube play "$WORK/replica-$i.yaml" > "$WORK/play-$i.log" 2>&1 || { cat "$WORK/play-$i.log"; fail "kube play replica $i"; }
done
container() { podman ps -a --format '{{.Names}}' | grep "^$PREFIX-$1-pod.*-server\$" | head -1; }

echo "== kube 3. every replica serves $version"
targets=()
for i in $(seq 0 $((REPLICAS - 1))); do
  addr=127.0.0.1:${ports[$i]}
  targets+=("$addr")
  ready=0
  for _ in $(seq 1 300); do
    if "$CLIENT" health --address "$addr" --service twotower.v1.Retrieval --timeout_ms 500 > /dev/null 2>&1; then
      ready=1; break
    fi
    sleep 0.2
  done
  [ "$ready" = 1 ] || { podman logs "$(container "$i")" 2>&1 | tail -20; fail "replica $i ($addr) not SERVING"; }
  served=$("$CLIENT" retrieve --address "$addr" --user u00001 --k 5 | awk '/^model /{print $2; exit}' | tr -d ,)
  [ "$served" = "$version" ] || fail "replica $i serves '$served', not the pinned $version"
  echo "replica $i ($addr, container $(container "$i")): SERVING, model $served"
done
all="ipv4:$(IFS=,; echo "${targets[*]}")"
"$CLIENT" retrieve --address "$all" --service_config "$REPO/client/service_config.json" --user u00002 --k 3 \
  | grep -q "^model $version" || fail "round_robin over $all (client/service_config.json)"
podman exec "$(container 0)" twotower client retrieve --address "$all" \
  --service_config /opt/twotower/service_config.json --user u00003 --k 3 \
  | grep -q "^model $version" || fail "the image's /opt/twotower/service_config.json"
echo "round_robin over the $REPLICAS replicas (host and image service config): model $version"
for i in $(seq 0 $((REPLICAS - 1))); do
  "$PYTHON" -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
    "http://127.0.0.1:${metrics_ports[$i]}/metrics" | grep -q "^twotower_model_info{.*model_version=\"$version\"} 1" \
    || fail "replica $i: /metrics on its --metrics_address"
done
echo "Prometheus metrics: every replica's /metrics names model $version"
# The Secret's token, as the container sees it (podman 4.3 mounts the Secret's data as it
# is written; the cluster decodes it): the admin API wants it.
podman exec "$(container 0)" cat /etc/twotower/admin/token > "$WORK/token"
"$CLIENT" status --admin_address "127.0.0.1:${admin_ports[0]}" --admin_token_file "$WORK/token" \
  | grep -q "$version" || fail "admin status with the Secret's token"
if "$CLIENT" status --admin_address "127.0.0.1:${admin_ports[0]}" > /dev/null 2>&1; then
  fail "admin status without the token was answered"
fi
echo "admin API: answers with the Secret's token, refuses without"

echo "== kube 4. stop: SIGTERM, drain, exit 0"
for i in $(seq 0 $((REPLICAS - 1))); do
  c=$(container "$i")
  podman stop -t 30 "$c" > /dev/null
  code=$(podman inspect --format '{{.State.ExitCode}}' "$c")
  [ "$code" = 0 ] || { podman logs "$c" 2>&1 | tail -20; fail "replica $i exited with $code"; }
done
echo "$REPLICAS replicas stopped, exit 0"
echo "deploy/kubernetes/test.sh: PASS"
