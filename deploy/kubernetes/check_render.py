#!/usr/bin/env python3
"""Renders deploy/kubernetes with `kubectl kustomize` and checks what the deploy guide
promises of the rendered objects (docs/DEPLOY.md):

* the server Deployment: replicas, RollingUpdate with maxUnavailable 0, gRPC probes on
  grpc.health.v1 (readiness per service), a termination grace period that covers the
  preStop sleep + the server's drain delay + its shutdown grace, memory requests/limits;
* ONE pinned model version: the twotower-model ConfigMap's, copied into the --bundle path
  and the pod annotation; `latest` nowhere;
* the admin token from a Secret that is not in the render (never committed);
* the Services, the PodDisruptionBudget, the HPA, the RWX volume and the trainer CronJob
  agree with the Deployment (selectors, ports, claim, image).

Then it breaks each promise in a copy of the render and checks that the check notices
(so a check that can never fail is caught too).

Exit status: 0 ok, 1 a check failed, 77 kubectl (or PyYAML) is missing: an environment
limit, reported as skipped by CTest.

    deploy/kubernetes/check_render.py [--rendered FILE]
"""

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
VERSION_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")  # bundle.cc's model_version rule
RETRIEVAL = "twotower.v1.Retrieval"


def flag_value(args, name):
    """Value of --name=VALUE in a container's args, or None."""
    prefix = "--%s=" % name
    values = [a[len(prefix):] for a in args if a.startswith(prefix)]
    return values[-1] if values else None


def memory_bytes(quantity):
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    m = re.fullmatch(r"(\d+)([A-Za-z]*)", str(quantity))
    if not m or (m.group(2) and m.group(2) not in units):
        raise ValueError("memory quantity %r" % quantity)
    return int(m.group(1)) * units.get(m.group(2), 1)


def check(docs, text):
    """Returns the list of broken promises of the rendered objects (empty = all hold)."""
    errors = []

    def expect(cond, message):
        if not cond:
            errors.append(message)
        return cond

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    for kind, count in [("Deployment", 1), ("Service", 3), ("PodDisruptionBudget", 1),
                        ("HorizontalPodAutoscaler", 1), ("PersistentVolumeClaim", 1),
                        ("CronJob", 1), ("ConfigMap", 1)]:
        expect(len(by_kind.get(kind, [])) == count,
               "%d %s object(s), expected %d" % (len(by_kind.get(kind, [])), kind, count))
    expect("Secret" not in by_kind, "a Secret is rendered: the admin token must not be committed")
    if errors:
        return errors

    deployment = by_kind["Deployment"][0]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    containers = [c for c in pod["containers"] if c["name"] == "server"]
    if not expect(len(containers) == 1, "no container named server"):
        return errors
    server = containers[0]
    args = server.get("args", [])
    env = {e["name"]: e.get("value") for e in server.get("env", [])}
    ports = {p["name"]: p["containerPort"] for p in server.get("ports", [])}

    # Replicas and the rollout.
    expect(spec.get("replicas", 1) >= 3, "replicas %s < 3" % spec.get("replicas"))
    strategy = spec.get("strategy", {})
    rolling = strategy.get("rollingUpdate", {})
    expect(strategy.get("type") == "RollingUpdate", "strategy is not RollingUpdate")
    expect(rolling.get("maxUnavailable") == 0, "maxUnavailable is %r, not 0" % rolling.get("maxUnavailable"))
    expect(rolling.get("maxSurge") == 1, "maxSurge is %r, not 1" % rolling.get("maxSurge"))

    # The one pinned model version.
    configmap = by_kind["ConfigMap"][0]
    version = configmap.get("data", {}).get("version", "")
    expect(configmap["metadata"]["name"] == "twotower-model", "the version ConfigMap is not twotower-model")
    expect(bool(VERSION_RE.match(version)) and version != "latest",
           "pinned version %r is not a bundle directory name" % version)
    expect(server.get("args", [None])[0] == "serve", "the container does not run the `serve` role")
    expect(env.get("TWOTOWER_BUNDLE") == "/bundles/" + version,
           "TWOTOWER_BUNDLE is %r, not /bundles/%s" % (env.get("TWOTOWER_BUNDLE"), version))
    expect(flag_value(args, "bundle") is None, "--bundle given in args: the pin must be in one place")
    annotations = spec["template"]["metadata"].get("annotations", {})
    expect(annotations.get("twotower.dev/model-version") == version,
           "pod annotation twotower.dev/model-version is %r, not %r"
           % (annotations.get("twotower.dev/model-version"), version))
    expect("latest" not in text, "`latest` occurs in the render")
    expect("MODEL_VERSION" not in text, "a MODEL_VERSION placeholder was not replaced")

    # Probes: grpc.health.v1 on the Retrieval port; readiness per service.
    def probe(name, service):
        p = server.get(name)
        if not expect(p is not None and "grpc" in p, "%s is not a gRPC probe" % name):
            return
        expect(p["grpc"].get("port") == ports.get("grpc"),
               "%s port %r is not the grpc port %r" % (name, p["grpc"].get("port"), ports.get("grpc")))
        expect(p["grpc"].get("service", "") == service,
               "%s service is %r, expected %r" % (name, p["grpc"].get("service", ""), service))
    probe("startupProbe", RETRIEVAL)
    probe("readinessProbe", RETRIEVAL)
    probe("livenessProbe", "")
    expect(env.get("TWOTOWER_ADDRESS", "").endswith(":%s" % ports.get("grpc")),
           "TWOTOWER_ADDRESS %r does not listen on the grpc port" % env.get("TWOTOWER_ADDRESS"))
    expect(env.get("TWOTOWER_ADMIN_ADDRESS", "").endswith(":%s" % ports.get("admin")),
           "TWOTOWER_ADMIN_ADDRESS %r does not listen on the admin port" % env.get("TWOTOWER_ADMIN_ADDRESS"))

    # Stopping: grace >= preStop + drain + shutdown grace (+ a margin).
    pre_stop = server.get("lifecycle", {}).get("preStop", {})
    sleep_s = 0
    command = pre_stop.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0] == "sleep" and command[1].isdigit():
        sleep_s = int(command[1])
    elif "sleep" in pre_stop:
        sleep_s = int(pre_stop["sleep"].get("seconds", 0))
    expect(sleep_s >= 1, "no preStop sleep")
    drain = flag_value(args, "drain_delay_ms")
    shutdown = flag_value(args, "shutdown_grace_ms")
    expect(drain is not None and shutdown is not None,
           "--drain_delay_ms and --shutdown_grace_ms must be explicit to size the grace period")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if drain is not None and shutdown is not None:
        needed = sleep_s + (int(drain) + int(shutdown)) / 1000.0 + 2  # 2 s: exit, margin
        expect(grace >= needed, "terminationGracePeriodSeconds %s < preStop %s + drain %s ms + "
               "shutdown grace %s ms + 2 s" % (grace, sleep_s, drain, shutdown))
    expect(flag_value(args, "max_connection_age_ms") is not None,
           "no --max_connection_age_ms: DNS clients would never find new replicas")

    # Resources.
    resources = server.get("resources", {})
    request = resources.get("requests", {}).get("memory")
    limit = resources.get("limits", {}).get("memory")
    if expect(request is not None and limit is not None, "memory request and limit must be set"):
        expect(memory_bytes(limit) >= memory_bytes(request), "memory limit < request")
    expect("cpu" in resources.get("requests", {}), "no cpu request: the HPA scales on it")

    # Volumes: the bundle claim (RWX), read-only bundles, the item log on the claim, the
    # admin token from a Secret.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = server.get("volumeMounts", [])
    pvc = by_kind["PersistentVolumeClaim"][0]
    expect(pvc["spec"].get("accessModes") == ["ReadWriteMany"], "the bundle claim is not ReadWriteMany")
    claim_volumes = {n for n, v in volumes.items()
                     if v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"]}
    bundle_mount = [m for m in mounts if m["mountPath"] == "/bundles" and m["name"] in claim_volumes]
    expect(len(bundle_mount) == 1 and bundle_mount[0].get("readOnly") is True,
           "/bundles is not the claim mounted read-only")
    item_log = flag_value(args, "item_log_dir")
    expect(item_log is not None and any(m["mountPath"] == item_log and m["name"] in claim_volumes
                                        and not m.get("readOnly") for m in mounts),
           "--item_log_dir %r is not a writable mount of the bundle claim" % item_log)
    for m in mounts:
        if m.get("subPath") and m["name"] in claim_volumes:
            made = any(m["subPath"] in " ".join(c.get("command", []) + c.get("args", []))
                       and any(im["name"] == m["name"] for im in c.get("volumeMounts", []))
                       for c in pod.get("initContainers", []))
            expect(made, "no init container makes the subPath %r on the claim" % m["subPath"])
    token = flag_value(args, "admin_token_file")
    secret_volumes = {n for n, v in volumes.items() if "secret" in v}
    expect(token is not None and any(token.startswith(m["mountPath"].rstrip("/") + "/")
                                     and m["name"] in secret_volumes for m in mounts),
           "--admin_token_file %r is not in a Secret volume" % token)
    expect("TWOTOWER_ADMIN_TOKEN" not in env, "an admin token literal in the env")
    expect(flag_value(args, "bundle_root") == "/bundles", "--bundle_root is not /bundles")

    # Services, PDB, HPA select these pods and use their ports.
    def selects(selector):
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    for name in services:
        s = services[name]["spec"]
        expect(selects(s.get("selector")), "Service %s does not select the server pods" % name)
        for port in s.get("ports", []):
            expect(port.get("targetPort") in ports, "Service %s targets unknown port %r"
                   % (name, port.get("targetPort")))
    headless = [n for n, s in services.items() if s["spec"].get("clusterIP") == "None"]
    expect(len(headless) == 1, "expected one headless Service, found %s" % headless)
    cluster = [n for n, s in services.items() if s["spec"].get("clusterIP") != "None"
               and any(p.get("targetPort") == "grpc" for p in s["spec"]["ports"])]
    expect(len(cluster) == 1, "expected one ClusterIP Service for Retrieval, found %s" % cluster)
    admin = [n for n, s in services.items() if any(p.get("targetPort") == "admin" for p in s["spec"]["ports"])]
    expect(len(admin) == 1 and services[admin[0]]["spec"].get("type", "ClusterIP") == "ClusterIP"
           if admin else False, "expected one in-cluster (ClusterIP) admin Service")
    pdb = by_kind["PodDisruptionBudget"][0]["spec"]
    expect(selects(pdb.get("selector", {}).get("matchLabels")), "the PDB does not select the server pods")
    hpa = by_kind["HorizontalPodAutoscaler"][0]["spec"]
    expect(hpa["scaleTargetRef"].get("kind") == "Deployment"
           and hpa["scaleTargetRef"].get("name") == deployment["metadata"]["name"],
           "the HPA does not scale the server Deployment")
    expect(hpa.get("minReplicas", 1) >= 2, "HPA minReplicas < 2: the PDB could block every drain")
    expect(any(m.get("resource", {}).get("name") == "cpu" for m in hpa.get("metrics", [])),
           "the HPA does not scale on CPU")

    # The trainer writes bundles to the same claim, with the same image.
    cron = by_kind["CronJob"][0]["spec"]
    job_pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    trainer = job_pod["containers"][0]
    expect(trainer.get("image") == server.get("image"), "trainer and server images differ")
    expect(trainer.get("args", [None])[0] == "train", "the CronJob does not run the `train` role")
    expect(flag_value(trainer.get("args", []), "export_dir") == "/bundles", "the trainer does not export to /bundles")
    expect(any(v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"]
               for v in job_pod.get("volumes", [])), "the trainer does not mount the bundle claim")
    expect(cron.get("concurrencyPolicy") == "Forbid", "two trainers could run at once")
    return errors


def broken_copies(docs):
    """(what is broken, docs) pairs: each must make check() report an error."""
    def mutate(fn):
        c = copy.deepcopy(docs)
        fn({d["kind"]: d for d in c}, c)
        return c

    def server(k):
        return k["Deployment"]["spec"]["template"]["spec"]["containers"][0]

    def set_arg(k, name, value):
        args = server(k)["args"]
        server(k)["args"] = [a for a in args if not a.startswith("--%s=" % name)] + ["--%s=%s" % (name, value)]

    yield "maxUnavailable 1", mutate(lambda k, c: k["Deployment"]["spec"]["strategy"]["rollingUpdate"].update(maxUnavailable=1))
    yield "bundle latest", mutate(lambda k, c: [e.update(value="/bundles/latest") for e in server(k)["env"]
                                                if e["name"] == "TWOTOWER_BUNDLE"])
    yield "readiness for the whole server", mutate(lambda k, c: server(k)["readinessProbe"]["grpc"].update(service=""))
    yield "no liveness probe", mutate(lambda k, c: server(k).pop("livenessProbe"))
    yield "a drain longer than the grace", mutate(lambda k, c: set_arg(k, "drain_delay_ms", 60000))
    yield "a grace shorter than the drain", mutate(
        lambda k, c: k["Deployment"]["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=5))
    yield "a committed Secret", mutate(lambda k, c: c.append({"kind": "Secret", "metadata": {"name": "t"}}))
    yield "one replica", mutate(lambda k, c: k["Deployment"]["spec"].update(replicas=1))
    yield "no init container", mutate(lambda k, c: k["Deployment"]["spec"]["template"]["spec"].pop("initContainers"))
    yield "an RWO claim", mutate(lambda k, c: k["PersistentVolumeClaim"]["spec"].update(accessModes=["ReadWriteOnce"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rendered", help="check this rendered file instead of running kubectl")
    args = parser.parse_args()
    try:
        import yaml
    except ImportError:
        print("NOTE: PyYAML (python3-yaml) is missing: render check skipped")
        return SKIP
    if args.rendered:
        with open(args.rendered) as f:
            text = f.read()
    else:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            print("NOTE: kubectl is not installed: `kubectl kustomize deploy/kubernetes` not checked")
            return SKIP
        run = subprocess.run([kubectl, "kustomize", HERE], capture_output=True, text=True)
        if run.returncode != 0:
            print("FAIL: kubectl kustomize %s:\n%s" % (HERE, run.stderr))
            return 1
        text = run.stdout
    docs = [d for d in yaml.safe_load_all(text) if d]

    errors = check(docs, text)
    for e in errors:
        print("FAIL: %s" % e)
    if errors:
        return 1
    names = ", ".join("%s/%s" % (d["kind"], d["metadata"]["name"]) for d in docs)
    print("rendered: %s" % names)

    for what, broken in broken_copies(docs):
        found = check(broken, yaml.safe_dump_all(broken))
        if not found:
            print("FAIL: the check does not notice: %s" % what)
            return 1
        print("noticed %s: %s" % (what, found[0]))
    print("check_render: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
