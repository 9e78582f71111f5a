#!/usr/bin/env bash
# The deployment files, checked by validators from PyPI (pinned, in their own
# venv under .data/manifests-venv): every Kubernetes manifest against the
# Kubernetes schemas in strict mode (kubernetes-validate), the compose file
# against the Compose specification (compose-spec), and what neither covers
# (KEDA and Prometheus Operator resources, targets that must exist, drain
# timings) by deploy/check_manifests.py.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=deploy/lib.sh
. deploy/lib.sh

KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VERSION=1.31.0
COMPOSE_SPEC_VERSION=0.2.1
PYYAML_VERSION=6.0.3

venv="$DEV_DATA_DIR/manifests-venv"
if ! command -v python3 >/dev/null 2>&1; then
    apt_install python3 python3-venv
fi
if [[ ! -x "$venv/bin/python" ]] && ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    apt_install python3-venv
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "
import importlib.metadata as m, sys
want = {'kubernetes-validate': '$KUBERNETES_VALIDATE_VERSION', 'compose-spec': '$COMPOSE_SPEC_VERSION', 'PyYAML': '$PYYAML_VERSION'}
sys.exit(any(m.version(k) != v for k, v in want.items()))" 2>/dev/null; then
    log "pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION compose-spec==$COMPOSE_SPEC_VERSION"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
        "compose-spec==$COMPOSE_SPEC_VERSION" "PyYAML==$PYYAML_VERSION"
fi

manifests=()
for f in deploy/k8s/*.yaml; do
    [[ "$(basename "$f")" == kustomization.yaml ]] || manifests+=("$f")
done
# Custom resources (KEDA, Prometheus Operator) have no bundled schema: they
# are warned about here and checked by check_manifests.py.
"$venv/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "${manifests[@]}"
"$venv/bin/python" deploy/check_manifests.py
