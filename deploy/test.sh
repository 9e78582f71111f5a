#!/usr/bin/env bash
# Test run: make sure redis and mongo (secantusd-rs) are up, then
#   cargo test --workspace --locked [CARGO ARGS] -- --test-threads=4 [TEST ARGS]
# e.g. ./deploy/test.sh -p aigentable-api -- --nocapture
# Tests read MONGODB_URI / REDIS_URL (defaults below); no .env is needed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=deploy/lib.sh
. deploy/lib.sh

export MONGODB_URI="${MONGODB_URI:-mongodb://127.0.0.1:27017}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

ensure_redis
ensure_mongo
ensure_node

# Split "$@" at the first "--": before it goes to cargo, after it to the test binaries.
cargo_args=()
test_args=()
seen_sep=0
for arg in "$@"; do
    if ((seen_sep)); then
        test_args+=("$arg")
    elif [[ "$arg" == -- ]]; then
        seen_sep=1
    else
        cargo_args+=("$arg")
    fi
done
threads=(--test-threads=4)
for arg in "${test_args[@]}"; do
    if [[ "$arg" == --test-threads* ]]; then threads=(); fi
done

log "cargo test --workspace --locked ${cargo_args[*]} -- ${threads[*]} ${test_args[*]}"
# cargo prints one "test result:" line per test binary, the last of them often
# for an empty one; close with the plain total so the whole run is summed up.
results=$(mktemp)
trap 'rm -f "$results"' EXIT
set +e
cargo test --workspace --locked "${cargo_args[@]}" -- "${threads[@]}" "${test_args[@]}" 2>&1 | tee "$results"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$results"
exit "$status"
