#!/usr/bin/env bash
# Dev stack: .env, redis, mongo (secantusd-rs), build, then run the Procfile
# processes (api, worker, scheduler) with prefixed output. Ctrl-C stops them;
# redis and mongo are left running.
#
#   ./deploy/dev.sh                 debug build
#   PROFILE=release ./deploy/dev.sh release build
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=deploy/lib.sh
. deploy/lib.sh

ensure_env
ensure_redis
ensure_mongo

profile="${PROFILE:-debug}"
case "$profile" in
debug) build_flags=() ;;
release) build_flags=(--release) ;;
*) die "PROFILE must be debug or release, got '$profile'" ;;
esac
log "cargo build ${build_flags[*]} --bins"
cargo build "${build_flags[@]}" --bins
bin_dir="${CARGO_TARGET_DIR:-target}/$profile"

# Procfile lines are "name: target/debug/<bin> [args]"; swap in the profile's dir.
names=()
cmds=()
while IFS= read -r line || [[ -n "$line" ]]; do
    [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
    [[ "$line" =~ ^([A-Za-z0-9_-]+):[[:space:]]*(.+)$ ]] || die "bad Procfile line: $line"
    names+=("${BASH_REMATCH[1]}")
    cmds+=("${BASH_REMATCH[2]/#target\/debug\//$bin_dir/}")
done <Procfile
((${#names[@]})) || die "Procfile lists no processes"

pids=()
stopping=0
stop_all() {
    local pid i
    if ((stopping)); then return 0; fi
    stopping=1
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    # Give them 15 s to drain, then SIGKILL whatever is left.
    for ((i = 0; i < 150; i++)); do
        local alive=0
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not stop in 15 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    log "stopped ${names[*]}. redis and mongo are still running; to stop them:"
    if [[ -f "$DEV_DATA_DIR/redis.pid" ]]; then
        log "  redis: kill \$(cat .data/redis.pid)"
    else
        log "  redis: redis-cli -u \"\$REDIS_URL\" shutdown nosave   (or stop the system service)"
    fi
    if [[ -f "$DEV_DATA_DIR/secantusd.pid" ]]; then
        log "  mongo: kill \$(cat .data/secantusd.pid)"
    fi
}
on_signal() {
    log "got $1; stopping ${names[*]}"
    stop_all
    exit "$2"
}
trap 'on_signal SIGINT 130' INT
trap 'on_signal SIGTERM 143' TERM
trap stop_all EXIT

for i in "${!names[@]}"; do
    name=${names[$i]}
    read -r -a argv <<<"${cmds[$i]}"
    [[ -x "${argv[0]}" ]] || die "$name: ${argv[0]} is not an executable (did the build produce it?)"
    log "starting $name: ${cmds[$i]}"
    # $! is the program itself; its output goes through sed for the prefix.
    # sed ignores SIGINT so a Ctrl-C doesn't cut off the shutdown logs; it
    # exits when the program closes its output.
    "${argv[@]}" > >(trap '' INT && exec sed -u "s/^/[$name] /") 2>&1 &
    pids+=("$!")
done

log "running ${names[*]} (pids ${pids[*]}); Ctrl-C to stop"
while :; do
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            status=0
            wait "${pids[$i]}" || status=$?
            log "${names[$i]} exited with status $status; stopping the others"
            unset 'pids[i]'
            stop_all
            exit $((status == 0 ? 1 : status))
        fi
    done
    sleep 1 &
    wait $! || true
done
