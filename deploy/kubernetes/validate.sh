#!/usr/bin/env bash
# Validates deploy/kubernetes offline: every resource listed in kustomization.yaml against
# the Kubernetes OpenAPI schemas bundled in the PyPI package kubernetes-validate (strict:
# unknown fields are errors), then the cross-references a schema cannot see (ports, probe
# paths, drain timing vs the grace period, the seccomp profile, the config itself).
#
#   deploy/kubernetes/validate.sh [DIR] [--egressd PATH]
#
# DIR defaults to this script's directory. With --egressd, the ConfigMap's egressd.yaml is
# also checked by `egressd validate`. Exit 0 when everything passes, 1 otherwise.
# Installs kubernetes-validate with pip when missing (no schema download at run time).
set -euo pipefail

dir="$(cd "$(dirname "$0")" && pwd)"
egressd=""
while (($#)); do
  case "$1" in
    --egressd) egressd="$2"; shift 2 ;;
    *) dir="$(cd "$1" && pwd)"; shift ;;
  esac
done

if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  echo "validate.sh: installing kubernetes-validate (bundles the schemas)" >&2
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate >&2
fi

exec python3 - "$dir" "$egressd" <<'PY'
import json, os, re, subprocess, sys, tempfile
import yaml
import kubernetes_validate as kv

root, egressd = sys.argv[1], sys.argv[2]
errors = []
def fail(msg):
    errors.append(msg)

kust = yaml.safe_load(open(os.path.join(root, "kustomization.yaml")))
listed = kust.get("resources", [])
present = sorted(f for f in os.listdir(root)
                 if f.endswith(".yaml") and f != "kustomization.yaml")
for f in present:
    if f not in listed:
        fail(f"{f}: not listed in kustomization.yaml resources")

docs = {}
for f in listed:
    path = os.path.join(root, f)
    if not os.path.exists(path):
        fail(f"kustomization.yaml lists {f}, which does not exist")
        continue
    for doc in yaml.safe_load_all(open(path)):
        if doc is None:
            continue
        try:
            kv.validate(doc, kv.latest_version(), strict=True)
        except kv.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            fail(f"{f}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {where}: {e.message}")
            continue
        except Exception as e:  # unknown kind/version, malformed document
            fail(f"{f}: {e}")
            continue
        docs[(doc["kind"], doc["metadata"]["name"])] = doc
        print(f"ok {f} {doc['kind']}/{doc['metadata']['name']}")

def one(kind):
    found = [d for (k, _), d in docs.items() if k == kind]
    if len(found) != 1:
        fail(f"expected exactly one {kind}, found {len(found)}")
        return None
    return found[0]

def seconds(d):
    return float(d[:-2]) / 1000 if d.endswith("ms") else float(d[:-1]) * {"s": 1, "m": 60, "h": 3600}[d[-1]]

dep, svc, cm, pdb = one("Deployment"), one("Service"), one("ConfigMap"), one("PodDisruptionBudget")
if dep and svc and cm and pdb:
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    c = pod["containers"][0]
    res = c["resources"]
    if res.get("requests") != res.get("limits"):
        fail("Deployment: requests != limits (not Guaranteed QoS)")
    cpu = str(res["limits"].get("cpu", ""))
    if not cpu.isdigit():
        fail(f"Deployment: cpu {cpu!r} is not an integer count (static CPU manager pins only those)")
    sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
    for key, want in [("allowPrivilegeEscalation", False), ("readOnlyRootFilesystem", True)]:
        if sc.get(key) is not want:
            fail(f"Deployment: securityContext.{key} must be {want}")
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        fail("Deployment: runAsNonRoot missing")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        fail("Deployment: capabilities must drop ALL")
    if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
        fail("Deployment: only NET_BIND_SERVICE may be added")
    for ctx in (sc, psc):
        prof = ctx.get("seccompProfile")
        if prof is not None:
            lp = prof.get("localhostProfile", "")
            if prof.get("type") != "Localhost" or not os.path.exists(os.path.join(root, "seccomp", os.path.basename(lp))):
                fail(f"Deployment: seccompProfile {prof} does not name seccomp/ of this directory")
    if not sc.get("seccompProfile") and not psc.get("seccompProfile"):
        fail("Deployment: no seccompProfile")
    if not any(t.get("key") == "egress" for t in pod.get("tolerations", [])):
        fail("Deployment: no toleration for the egress taint")
    if not pod.get("nodeSelector"):
        fail("Deployment: no nodeSelector")
    if not pod.get("affinity", {}).get("podAntiAffinity"):
        fail("Deployment: no podAntiAffinity")

    # The config as mounted: ports and admin address must agree with the pod spec.
    conf_docs = list(yaml.safe_load_all(cm["data"]["egressd.yaml"]))
    boot = next((d for d in conf_docs if d and d.get("kind") == "EgressGateway"), None)
    if boot is None:
        fail("ConfigMap: egressd.yaml has no EgressGateway bootstrap")
    else:
        spec = boot["spec"]
        port_map = {int(k): int(v) for k, v in spec.get("portMap", {}).items()}
        admin_port = int(str(spec.get("admin", "")).rsplit(":", 1)[-1])
        if not str(spec.get("admin", "")).startswith("0.0.0.0:"):
            fail("ConfigMap: admin must listen on 0.0.0.0 for httpGet probes")
        named = {p["name"]: p["containerPort"] for p in c["ports"]}
        for p in svc["spec"]["ports"]:
            target = p["targetPort"]
            target = named.get(target, target)
            if port_map.get(p["port"], p["port"]) != target:
                fail(f"Service port {p['port']} -> {target}, but portMap binds {port_map.get(p['port'], p['port'])}")
        if svc["spec"]["selector"].items() - labels.items():
            fail("Service selector does not match the pod labels")
        if pdb["spec"]["selector"]["matchLabels"].items() - labels.items():
            fail("PodDisruptionBudget selector does not match the pod labels")
        for probe, path in [("readinessProbe", "/ready"), ("livenessProbe", "/healthz")]:
            get = c.get(probe, {}).get("httpGet", {})
            if get.get("path") != path or named.get(get.get("port"), get.get("port")) != admin_port:
                fail(f"Deployment: {probe} must GET {path} on admin port {admin_port}")
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(admin_port) \
                or ann.get("prometheus.io/path") != "/stats/prometheus":
            fail("Deployment: prometheus.io annotations must scrape /stats/prometheus on the admin port")
        # Grace period covers the preStop sleeps plus the SIGTERM drain.
        drain = seconds(spec.get("timeouts", {}).get("drain", "5s"))
        cmd = " ".join(c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", []))
        if "/drain_listeners" not in cmd or "POST" not in cmd:
            fail("Deployment: preStop must POST /drain_listeners")
        slept = sum(float(n) for n in re.findall(r"sleep\s+(\d+(?:\.\d+)?)", cmd))
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if not slept + drain < grace:
            fail(f"Deployment: preStop sleeps {slept}s + drain {drain}s must stay below terminationGracePeriodSeconds {grace}")
        if egressd:
            with tempfile.TemporaryDirectory() as t:
                p = os.path.join(t, "egressd.yaml")
                open(p, "w").write(cm["data"]["egressd.yaml"])
                r = subprocess.run([egressd, "validate", "-c", p], capture_output=True, text=True)
                if r.returncode != 0:
                    fail(f"ConfigMap egressd.yaml: egressd validate: {r.stdout}{r.stderr}")
                else:
                    print("ok ConfigMap egressd.yaml: egressd validate")

prof_path = os.path.join(root, "seccomp", "egressd.json")
try:
    prof = json.load(open(prof_path))
    if prof.get("defaultAction") != "SCMP_ACT_ERRNO":
        fail("seccomp: defaultAction must be SCMP_ACT_ERRNO")
    allowed = {n for s in prof.get("syscalls", []) if s.get("action") == "SCMP_ACT_ALLOW" for n in s["names"]}
    for need in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        if need not in allowed:
            fail(f"seccomp: {need} not allowed")
    print(f"ok seccomp/egressd.json: {len(allowed)} syscalls allowed")
except (OSError, ValueError) as e:
    fail(f"seccomp/egressd.json: {e}")

for e in errors:
    print("FAIL " + e)
sys.exit(1 if errors else 0)
PY
