#!/usr/bin/env bash
# Contract check: schemathesis (PyPI, pinned) runs every check it has against
# the running api's /api/v1/openapi.json with a valid token. Passes only with
# zero server errors and zero spec violations.
#
#   ./deploy/schemathesis.sh              debug build (what .ci/run uses)
#   ST_MAX_EXAMPLES=50 ./deploy/schemathesis.sh
#
# It builds and starts api + workers on free ports against the local Redis and
# MongoDB (fresh database and Redis namespace, removed afterwards), registers a
# tenant through the api for the token, runs schemathesis and stops both
# processes. schemathesis is installed into .data/schemathesis-venv (python3
# venv; Debian's python3-venv is installed when missing).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=deploy/lib.sh
. deploy/lib.sh

SCHEMATHESIS_VERSION=4.32.5
# Only to drop the run's database afterwards.
PYMONGO_VERSION=4.20.0
MAX_EXAMPLES="${ST_MAX_EXAMPLES:-20}"
# Per-operation settings: the checks that cannot apply to some operations.
config="$PWD/deploy/schemathesis.toml"

export MONGODB_URI="${MONGODB_URI:-mongodb://127.0.0.1:27017}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
ensure_redis
ensure_mongo

# --- schemathesis in its own venv -------------------------------------------
venv="$DEV_DATA_DIR/schemathesis-venv"
if ! command -v python3 >/dev/null 2>&1; then
    apt_install python3 python3-venv
fi
if [[ ! -x "$venv/bin/python" ]] && ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    apt_install python3-venv
    python3 -m venv "$venv"
fi
if [[ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != *"$SCHEMATHESIS_VERSION"* ]] ||
    ! "$venv/bin/python" -c "import pymongo, sys; sys.exit(pymongo.version != '$PYMONGO_VERSION')" 2>/dev/null; then
    log "pip install schemathesis==$SCHEMATHESIS_VERSION pymongo==$PYMONGO_VERSION"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" "pymongo==$PYMONGO_VERSION"
fi

# --- api + workers on free ports, own database and namespace -----------------
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
log "cargo build --locked --bin api --bin workers"
cargo build --locked --bin api --bin workers
bin_dir="$(cd "${CARGO_TARGET_DIR:-target}/debug" && pwd)"

run_id="st$(date +%s)$$"
work="$DEV_DATA_DIR/schemathesis-$run_id"
mkdir -p "$work"
port=$(free_port)
base="http://127.0.0.1:$port"
export HOST=127.0.0.1 PORT="$port"
export MONGODB_DB="$run_id" REDIS_NAMESPACE="$run_id" DATA_DIR="$work/data"
export JWT_SECRET="$(head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n')"
export DATA_ENCRYPTION_KEY="$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
export PUBLIC_BASE_URL="$base" APP_BASE_URL="$base" CORS_ORIGINS="$base"
export WORKER_METRICS_PORT="$(free_port)"
# The run registers many tenants and fails logins on purpose.
export REGISTER_MAX_PER_IP=100000 LOGIN_MAX_FAILURES_PER_IP=100000
# One token makes every request: request rate and plan limits out of the way
# (429 and 402 are in the spec; the limits have their own tests).
export RATE_LIMIT_USER_PER_MINUTE=1000000 RATE_LIMIT_TENANT_PER_MINUTE=1000000
export RATE_LIMIT_EXPENSIVE_PER_MINUTE=1000000
export PLANS_JSON='[{"id":"free","name":"Free","priceCents":0,"currency":"USD","limits":{"users":100000,"agents":100000,"channels":100000,"documents":1000000,"storageBytes":1000000000000,"conversationsPerMonth":100000000,"messagesPerMonth":100000000,"llmTokensPerMonth":100000000000}}]'
export LOG_FORMAT=json RUST_LOG="${RUST_LOG:-warn}"

pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if command -v redis-cli >/dev/null 2>&1; then
        redis-cli -u "$REDIS_URL" --scan --pattern "$run_id:*" 2>/dev/null |
            xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
    fi
    "$venv/bin/python" - "$MONGODB_URI" "$run_id" <<'EOF' 2>/dev/null || true
import sys
import pymongo
pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=3000).drop_database(sys.argv[2])
EOF
    rm -rf "$work"
}
trap cleanup EXIT

"$bin_dir/api" >"$work/api.log" 2>&1 &
pids+=($!)
"$bin_dir/workers" >"$work/workers.log" 2>&1 &
pids+=($!)

for ((i = 0; i < 120; i++)); do
    if curl -fsS "$base/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "${pids[0]}" 2>/dev/null; then
        cat "$work/api.log" >&2
        die "the api stopped while starting"
    fi
    sleep 0.5
done
curl -fsS "$base/readyz" >/dev/null || die "the api did not become ready at $base"

email="st-$run_id@example.com"
token=$(curl -fsS -X POST "$base/api/v1/auth/register" -H 'Content-Type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"schemathesisPass1\",\"firstName\":\"Schema\",\"lastName\":\"Thesis\",\"tenantName\":\"Schemathesis\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')

log "schemathesis $SCHEMATHESIS_VERSION against $base/api/v1/openapi.json (at most $MAX_EXAMPLES examples per operation)"
# Logging out would revoke the run's own token; everything else is fair game.
set +e
# Run from the work directory: schemathesis keeps state in ./.schemathesis.
cd "$work"
"$venv/bin/schemathesis" --no-color --config-file "$config" run "$base/api/v1/openapi.json" \
    --checks all \
    --header "Authorization: Bearer $token" \
    --exclude-path /api/v1/auth/logout \
    --max-examples "$MAX_EXAMPLES" \
    --workers 1 \
    --request-timeout 30 \
    --seed "${ST_SEED:-20261130}" \
    --generation-database none \
    --report junit --report-dir "$work/report"
status=$?
set -e
if ((status != 0)); then
    log "schemathesis failed; the api log ends with:"
    tail -n 40 "$work/api.log" >&2 || true
fi
exit "$status"
