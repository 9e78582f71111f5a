# shellcheck shell=bash
# Helpers for the dev stack scripts (deploy/dev.sh, deploy/test.sh, .ci/run).
# Source it; it only defines variables and functions:
#
#   ensure_env    create .env from .env.example (fresh secrets) and load it
#   ensure_redis  make sure something answers PING at $REDIS_URL
#   ensure_mongo  make sure something accepts connections at $MONGODB_URI
#
# Local services started here live under "$REPO_ROOT/.data/" (git-ignored):
#   redis.pid / redis.log                  redis-server (daemonized)
#   secantusd.pid / secantusd.log / mongo/ secantusd-rs (MongoDB surrogate)
#
# secantusd-rs (crate secantus-mdb 0.5.3-beta.196) is a single-node MongoDB
# wire-protocol server for tests/dev. Command line verified on this repo's dev
# box (Debian 12, rustc 1.95), checked with a TCP connect + pymongo `ping`,
# insert/find and a stop/restart cycle:
#
#   secantusd-rs --config .data/secantusd.toml --host 127.0.0.1 --port 27017 \
#       --storage-path .data/mongo --cache-size 256M --log-file-max 16MB \
#       --log-level WARNING
#
# started detached (setsid, stdin /dev/null, output >> .data/secantusd.log).
#
# Flags (from `secantusd-rs --help`): --host (default 127.0.0.1), --port
# (default 27017), --storage-path (WiredTiger home, created if missing, kept
# across restarts; default ./secantus-data), --cache-size (default 4G: too
# much for a dev box), --log-file-max (WAL file, allocated in full; default
# 128MB), --log-level DEBUG|INFO|WARNING|ERROR, --config PATH (an empty file
# here: passing it disables auto-discovery of ./secantusd.toml,
# ~/.secantus/secantusd.toml and /etc/secantus/secantusd.toml). There is no
# in-memory mode: the data lives in .data/mongo (delete it for a clean db
# while the server is stopped). It prints "secantusd-rs listening on ADDR"
# once ready and stops cleanly (checkpoint) on SIGINT/SIGTERM.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV_DATA_DIR="$REPO_ROOT/.data"

SECANTUS_CRATE=secantus-mdb
SECANTUS_VERSION=0.5.3-beta.196
SECANTUS_START_TIMEOUT=${SECANTUS_START_TIMEOUT:-60}

# `cargo install` puts binaries here; make them findable.
if [[ -d "${CARGO_HOME:-$HOME/.cargo}/bin" && ":$PATH:" != *":${CARGO_HOME:-$HOME/.cargo}/bin:"* ]]; then
    PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    export PATH
fi

log() { printf '[deploy] %s\n' "$*" >&2; }
die() {
    printf '[deploy] ERROR: %s\n' "$*" >&2
    exit 1
}

# Run a command as root: directly when root, else through sudo.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' (not root and no sudo)"
    fi
}

_APT_UPDATED=0
# apt_install PKG...: apt-get install, running `apt-get update` once first.
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found: install $* yourself"
    if [[ "$_APT_UPDATED" -eq 0 ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        _APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# url_host_port URL DEFAULT_PORT -> prints "HOST PORT" of the first host in a
# redis:// or mongodb:// URL (credentials, path and options stripped).
url_host_port() {
    local rest=${1#*://} default_port=$2 host port
    rest=${rest%%/*}
    rest=${rest%%\?*}
    rest=${rest##*@}
    rest=${rest%%,*}
    if [[ "$rest" == \[* ]]; then # [ipv6]:port
        host=${rest%%]*}
        host=${host#[}
        port=${rest#*]}
        port=${port#:}
    elif [[ "$rest" == *:* ]]; then
        host=${rest%%:*}
        port=${rest##*:}
    else
        host=$rest
        port=
    fi
    printf '%s %s\n' "${host:-127.0.0.1}" "${port:-$default_port}"
}

is_local_host() {
    case "$1" in
    127.0.0.1 | localhost | ::1 | 0.0.0.0) return 0 ;;
    *) return 1 ;;
    esac
}

# tcp_open HOST PORT: does HOST:PORT accept a TCP connection (2 s max)?
tcp_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

# redis_ping URL: does a redis answer PING there?
redis_ping() {
    local url=$1 host port
    if command -v redis-cli >/dev/null 2>&1; then
        [[ "$(timeout 5 redis-cli -u "$url" ping 2>/dev/null)" == PONG* ]]
    else
        read -r host port < <(url_host_port "$url" 6379)
        # A reply of -NOAUTH also means a redis is there (it wants a password).
        # shellcheck disable=SC2016 # expanded by the inner bash
        timeout 3 bash -c '
            exec 3<>"/dev/tcp/$1/$2" || exit 1
            printf "PING\r\n" >&3
            IFS= read -r line <&3 || exit 1
            [[ $line == +PONG* || $line == -NOAUTH* ]]' _ "$host" "$port" 2>/dev/null
    fi
}

# pid_is PIDFILE NAME: is the process named in PIDFILE alive and running NAME?
pid_is() {
    local pid
    [[ -r "$1" ]] || return 1
    pid=$(<"$1")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/cmdline" ]]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"
    fi
}

ensure_redis() {
    export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
    local host port i
    if redis_ping "$REDIS_URL"; then
        log "redis: answering at $REDIS_URL"
        return 0
    fi
    read -r host port < <(url_host_port "$REDIS_URL" 6379)
    is_local_host "$host" ||
        die "redis: nothing answers at $REDIS_URL (not a local address: start it yourself)"
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server
        # The package may have started a system service already (without
        # persistence by default: queued jobs and accepted webhooks live in
        # Redis, so it gets an append-only file).
        if redis_ping "$REDIS_URL"; then
            redis-cli -u "$REDIS_URL" CONFIG SET appendonly yes >/dev/null 2>&1 ||
                log "redis: could not turn on the append-only file of the system service"
            log "redis: answering at $REDIS_URL (system service)"
            return 0
        fi
    fi
    mkdir -p "$DEV_DATA_DIR"
    log "redis: starting redis-server on 127.0.0.1:$port (log: $DEV_DATA_DIR/redis.log)"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" \
        --save "" --appendonly yes --dir "$DEV_DATA_DIR" \
        --logfile "$DEV_DATA_DIR/redis.log" --pidfile "$DEV_DATA_DIR/redis.pid" ||
        die "redis: redis-server failed to start; see $DEV_DATA_DIR/redis.log"
    for ((i = 0; i < 50; i++)); do
        if redis_ping "$REDIS_URL"; then
            log "redis: answering at $REDIS_URL"
            return 0
        fi
        sleep 0.2
    done
    die "redis: started but nothing answers PING at $REDIS_URL; see $DEV_DATA_DIR/redis.log"
}

# Install secantusd-rs with cargo unless it is on PATH already.
ensure_secantus_installed() {
    command -v secantusd-rs >/dev/null 2>&1 && return 0
    command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust with rustup)"
    local missing=()
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    command -v make >/dev/null 2>&1 || missing+=(make)
    command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    fi
    log "mongo: installing secantusd-rs ($SECANTUS_CRATE $SECANTUS_VERSION; builds WiredTiger, takes 5-10 min)"
    # The crate declares a newer rust-version than it needs; hence --ignore-rust-version.
    cargo install "$SECANTUS_CRATE" --version "$SECANTUS_VERSION" --locked --ignore-rust-version ||
        die "mongo: 'cargo install $SECANTUS_CRATE' failed"
    command -v secantusd-rs >/dev/null 2>&1 ||
        die "mongo: secantusd-rs installed but not on PATH (add ~/.cargo/bin to PATH)"
}

_mongo_lock_fd=
_mongo_unlock() {
    if [[ -n "$_mongo_lock_fd" ]]; then
        exec {_mongo_lock_fd}>&-
        _mongo_lock_fd=
    fi
}

ensure_mongo() {
    export MONGODB_URI="${MONGODB_URI:-mongodb://127.0.0.1:27017}"
    local host port pidfile logfile pid i
    read -r host port < <(url_host_port "$MONGODB_URI" 27017)
    if tcp_open "$host" "$port"; then
        log "mongo: accepting connections at $host:$port"
        return 0
    fi
    is_local_host "$host" ||
        die "mongo: nothing listens at $host:$port (not a local address: start it yourself)"
    ensure_secantus_installed
    mkdir -p "$DEV_DATA_DIR/mongo"
    pidfile="$DEV_DATA_DIR/secantusd.pid"
    logfile="$DEV_DATA_DIR/secantusd.log"
    # Serialize concurrent callers (dev.sh and test.sh at once): the second
    # one waits here, then finds the port open.
    exec {_mongo_lock_fd}>"$DEV_DATA_DIR/secantusd.lock"
    if command -v flock >/dev/null 2>&1; then
        flock -w $((SECANTUS_START_TIMEOUT + 30)) "$_mongo_lock_fd" ||
            die "mongo: timed out waiting for $DEV_DATA_DIR/secantusd.lock"
    fi
    if tcp_open "$host" "$port"; then
        _mongo_unlock
        log "mongo: accepting connections at $host:$port"
        return 0
    fi
    if pid_is "$pidfile" secantusd-rs; then
        pid=$(<"$pidfile")
        # Ours, but maybe started for another port (the data dir is shared).
        if [[ -r "/proc/$pid/cmdline" ]] &&
            ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--port $port "; then
            die "mongo: secantusd-rs pid $pid (data $DEV_DATA_DIR/mongo) runs on another port, nothing listens on $host:$port; stop it (kill $pid) or fix MONGODB_URI"
        fi
        log "mongo: secantusd-rs already running (pid $pid), waiting for it"
    else
        # Empty config file: passing --config stops it picking up a stray
        # secantusd.toml from the current directory, ~ or /etc.
        : >"$DEV_DATA_DIR/secantusd.toml"
        log "mongo: starting secantusd-rs on 127.0.0.1:$port (data: $DEV_DATA_DIR/mongo, log: $logfile)"
        # setsid: own session, so a Ctrl-C in the calling terminal doesn't
        # stop it. setsid may fork, so the server's pid is written from inside.
        rm -f "$pidfile"
        # shellcheck disable=SC2016 # expanded by the inner bash
        setsid bash -c 'echo "$$" >"$1" && shift && exec "$@"' _ "$pidfile" \
            secantusd-rs --config "$DEV_DATA_DIR/secantusd.toml" \
            --host 127.0.0.1 --port "$port" --storage-path "$DEV_DATA_DIR/mongo" \
            --cache-size 256M --log-file-max 16MB --log-level WARNING \
            </dev/null >>"$logfile" 2>&1 {_mongo_lock_fd}>&- &
        for ((i = 0; i < 50; i++)); do
            [[ -s "$pidfile" ]] && break
            sleep 0.1
        done
        [[ -s "$pidfile" ]] || die "mongo: secantusd-rs did not start; see $logfile"
        pid=$(<"$pidfile")
    fi
    for ((i = 0; i < SECANTUS_START_TIMEOUT * 5; i++)); do
        if tcp_open "$host" "$port"; then
            _mongo_unlock
            log "mongo: accepting connections at $host:$port (secantusd-rs pid $pid; stop: kill $pid)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pidfile"
            tail -n 20 "$logfile" >&2 || true
            die "mongo: secantusd-rs exited during startup; see $logfile"
        fi
        sleep 0.2
    done
    tail -n 20 "$logfile" >&2 || true
    die "mongo: secantusd-rs (pid $pid) did not accept connections on $host:$port within ${SECANTUS_START_TIMEOUT}s; see $logfile"
}

# ensure_env: create .env from .env.example (fresh JWT_SECRET and
# DATA_ENCRYPTION_KEY) if missing, then export everything in it.
ensure_env() {
    local env_file="$REPO_ROOT/.env" example="$REPO_ROOT/.env.example"
    local line jwt key seen_jwt=0 seen_key=0
    if [[ ! -f "$env_file" ]]; then
        [[ -f "$example" ]] || die "neither .env nor .env.example exists in $REPO_ROOT"
        jwt=$(head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n')
        key=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
        (
            umask 077
            exec >"$env_file.tmp"
            while IFS= read -r line || [[ -n "$line" ]]; do
                case "$line" in
                JWT_SECRET=*)
                    line="JWT_SECRET=$jwt"
                    seen_jwt=1
                    ;;
                DATA_ENCRYPTION_KEY=*)
                    line="DATA_ENCRYPTION_KEY=$key"
                    seen_key=1
                    ;;
                esac
                printf '%s\n' "$line"
            done <"$example"
            ((seen_jwt)) || printf 'JWT_SECRET=%s\n' "$jwt"
            ((seen_key)) || printf 'DATA_ENCRYPTION_KEY=%s\n' "$key"
        )
        mv "$env_file.tmp" "$env_file"
        log "created .env from .env.example with fresh JWT_SECRET and DATA_ENCRYPTION_KEY"
    fi
    set -a
    # shellcheck disable=SC1090,SC1091
    . "$env_file"
    set +a
}

# ensure_node: node and npm (Debian's packages when missing), then the pinned
# socket.io-client the realtime compatibility test drives (its `ws` runs the
# widget script in the streaming test).
ensure_node() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        log "node/npm not found: installing Debian's nodejs and npm"
        apt_install nodejs npm
    fi
    local dir="$REPO_ROOT/tests/socketio-client"
    if [[ ! -d "$dir/node_modules/socket.io-client" || "$dir/package-lock.json" -nt "$dir/node_modules" ]]; then
        log "npm ci in tests/socketio-client"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed in tests/socketio-client"
        touch "$dir/node_modules"
    fi
}
