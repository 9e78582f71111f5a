"""What kubernetes-validate cannot check in deploy/: the compose file against
the Compose specification (compose-spec), the custom resources (KEDA
ScaledObject, PrometheusRule), and that the manifests fit together (every
autoscaler and disruption budget targets a Deployment that exists, every
workers Deployment drains within its grace period, the kustomization lists
every file). Exits non-zero naming each problem."""

import json
import pathlib
import re
import sys

import yaml
from compose_spec import PyCompose

root = pathlib.Path(__file__).resolve().parent
problems = []


def problem(where, what):
    problems.append(f"{where}: {what}")


# --- compose ---------------------------------------------------------------
compose_path = root / "compose.yaml"
# safe_load resolves the YAML merge keys (<<) Docker Compose accepts and the
# compose-spec parser does not.
compose = yaml.safe_load(compose_path.read_text())
try:
    services = PyCompose.from_json(json.dumps(compose)).service_names()
except ValueError as e:
    problem("compose.yaml", e)
    services = []
for name in services:
    service = compose["services"][name]
    for dep in (service.get("depends_on") or {}):
        if dep not in services:
            problem("compose.yaml", f"{name} depends on unknown service {dep}")
redis = compose.get("services", {}).get("redis", {})
command = " ".join(redis.get("command", []))
if "--appendonly yes" not in command:
    problem("compose.yaml", "redis must run with persistence (--appendonly yes)")
if "--maxmemory-policy noeviction" not in command:
    problem("compose.yaml", "redis must never evict queue keys (--maxmemory-policy noeviction)")

# --- kubernetes --------------------------------------------------------------
k8s = root / "k8s"
docs = []
for path in sorted(k8s.glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            docs.append((path.name, doc))

kustomization = next((d for f, d in docs if d.get("kind") == "Kustomization"), None)
listed = set((kustomization or {}).get("resources", []))
for path in sorted(k8s.glob("*.yaml")):
    if path.name != "kustomization.yaml" and path.name not in listed:
        problem("kustomization.yaml", f"{path.name} is not listed")

deployments = {
    d["metadata"]["name"]: d for _, d in docs if d.get("kind") == "Deployment"
}


def labels_match(selector, deployment):
    labels = deployment["spec"]["template"]["metadata"].get("labels", {})
    return all(labels.get(k) == v for k, v in selector.items())


for f, d in docs:
    kind, name = d.get("kind"), d.get("metadata", {}).get("name")
    where = f"{f} {kind}/{name}"
    if kind == "ScaledObject":
        spec = d.get("spec", {})
        target = spec.get("scaleTargetRef", {}).get("name")
        if target not in deployments:
            problem(where, f"scales unknown Deployment {target}")
        lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
            problem(where, "minReplicaCount must be <= maxReplicaCount")
        triggers = spec.get("triggers") or []
        if not triggers:
            problem(where, "no trigger")
        for t in triggers:
            meta = t.get("metadata", {})
            if t.get("type") in ("cpu", "memory"):
                # KEDA's resource triggers: a utilization of the requests.
                if t.get("metricType") not in ("Utilization", "AverageValue"):
                    problem(where, f"{t['type']} trigger needs metricType Utilization or AverageValue")
                if not re.fullmatch(r"[0-9]+", str(meta.get("value", ""))):
                    problem(where, f"{t['type']} trigger metadata.value must be a number in a string")
                continue
            if t.get("type") != "prometheus":
                problem(where, f"unexpected trigger type {t.get('type')}")
            for key in ("serverAddress", "query", "threshold"):
                if not isinstance(meta.get(key), str) or not meta.get(key):
                    problem(where, f"trigger metadata.{key} must be a non-empty string")
            if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", str(meta.get("threshold", ""))):
                problem(where, "threshold must be a number in a string")
            if meta.get("query", "").count("(") != meta.get("query", "").count(")"):
                problem(where, "unbalanced parentheses in the query")
    elif kind == "PrometheusRule":
        for group in d.get("spec", {}).get("groups", []):
            for rule in group.get("rules", []):
                if not rule.get("alert") or not rule.get("expr"):
                    problem(where, f"rule without alert or expr: {rule}")
                elif rule["expr"].count("(") != rule["expr"].count(")"):
                    problem(where, f"{rule['alert']}: unbalanced parentheses")
    elif kind in ("PodDisruptionBudget",):
        selector = d["spec"]["selector"]["matchLabels"]
        if not any(labels_match(selector, dep) for dep in deployments.values()):
            problem(where, f"selects no Deployment: {selector}")
    elif kind == "HorizontalPodAutoscaler":
        target = d["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            problem(where, f"scales unknown Deployment {target}")

for name, dep in deployments.items():
    pod = dep["spec"]["template"]["spec"]
    for c in pod["containers"]:
        if "workers" not in c.get("command", [])[:1]:
            continue
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        grace = int(env.get("WORKER_SHUTDOWN_GRACE_SECS", "30"))
        if pod.get("terminationGracePeriodSeconds", 30) < grace + 5:
            problem(
                f"Deployment/{name}",
                "terminationGracePeriodSeconds must exceed WORKER_SHUTDOWN_GRACE_SECS "
                "by the time the hand-back and the exit take",
            )
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            problem(f"Deployment/{name}", "workers need the /readyz readiness probe")

for p in problems:
    print(f"error: {p}", file=sys.stderr)
print(
    f"compose: {len(services)} services; kubernetes: {len(docs)} documents; "
    f"{len(problems)} problems"
)
sys.exit(1 if problems else 0)
