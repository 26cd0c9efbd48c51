#!/usr/bin/env bash
# Async orders accepted per second: `POST /api/order` with `Prefer:
# respond-async` while the circuit is held open, so every order is stored and
# answered 202 (the 202 leaves only once the order is durable). Backends:
#   embedded        the redb file (each accept one fsync'd commit)
#   redis           a local redis-server, appendonly yes + appendfsync always
#                   (as durable as the embedded file: fsync before the reply)
#   redis-everysec  the same with Redis's default appendfsync everysec
# Wall-clock figures on a shared 2-core VM: compare within one run.
#
#   bash benches/queue.sh                      all backends, c=1 and c=32, 2000 orders each
#   bash benches/queue.sh --conns "1 8" --n 5000 --backends embedded
#   bash benches/queue.sh --bin path/to/factory-sidecar
#   bash benches/queue.sh --dir /some/disk     where the embedded file goes (default: a temp dir)
#
# Needs ab (apache2-utils) and, for redis, redis-server; loopback only.
set -euo pipefail

BACKENDS="embedded redis redis-everysec" CONNS="1 32" N=2000 BIN="" DIR=""
while (($#)); do
    case "$1" in
    --backends) BACKENDS=${2:?}; shift ;;
    --conns) CONNS=${2:?}; shift ;;
    --n) N=${2:?}; shift ;;
    --bin) BIN=${2:?}; shift ;;
    --dir) DIR=${2:?}; shift ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "queue.sh: unknown option '$1'" >&2; exit 1 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
need=()
command -v ab >/dev/null || need+=(apache2-utils)
[[ $BACKENDS != *redis* ]] || command -v redis-server >/dev/null || need+=(redis-server)
if ((${#need[@]})); then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [[ -z $BIN ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/factory-sidecar
fi
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
bench_constants "$ROOT" || exit 1

TMP=$(mktemp -d "${TMPDIR:-/tmp}/factory-queue.XXXXXX")
STORE_DIR=${DIR:-$TMP}
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT
printf '%s' "$BENCH_BODY" >"$TMP/body.json"
start_sim "$TMP/sim.out" "$BIN" || exit 1
PIDS+=("$SIM_PID")
TOKEN=bench-$RANDOM$RANDOM

wait_http() { # url
    for _ in $(seq 300); do
        curl -s -o /dev/null -m 1 "$1" && return 0
        sleep 0.05
    done
    echo "no answer from $1" >&2
    return 1
}

# One run: a fresh sidecar (and Redis) per backend and concurrency; prints accepts/s.
run() { # backend conns
    local backend=$1 c=$2 listen admin queue redis_pid=""
    listen=127.0.0.1:$(free_port)
    admin=127.0.0.1:$(free_port)
    case $backend in
    embedded)
        queue="dir = \"$STORE_DIR/store-$c-$RANDOM\""
        ;;
    redis | redis-everysec)
        local port fsync=always
        port=$(free_port)
        [[ $backend == redis-everysec ]] && fsync=everysec
        redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly yes \
            --appendfsync "$fsync" --dir "$TMP" --appendfilename "aof-$port" >/dev/null 2>&1 &
        redis_pid=$!
        PIDS+=("$redis_pid")
        for _ in $(seq 200); do
            [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break
            sleep 0.05
        done
        queue=$(printf 'backend = "redis"\nredis_url = "redis://127.0.0.1:%s"' "$port")
        ;;
    *) echo "unknown backend $backend" >&2; exit 1 ;;
    esac
    printf '[server]\nlisten = "%s"\n[upstream]\nurl = "http://%s"\n[admin]\nlisten = "%s"\ntoken = "%s"\n[queue]\n%s\n' \
        "$listen" "$UP" "$admin" "$TOKEN" "$queue" >"$TMP/sc.toml"
    env RUST_LOG=warn "$BIN" run --config "$TMP/sc.toml" >"$TMP/sc.log" 2>&1 &
    local pid=$!
    wait_http "http://$admin/healthz"
    curl -s -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" "http://$admin/circuit/open"
    ab -q -k -c "$c" -n "$N" -p "$TMP/body.json" -T application/json \
        -H "Authorization: Bearer $BENCH_KEY" -H "Prefer: respond-async" \
        "http://$listen/api/order" >"$TMP/ab.log" 2>&1
    local accepted
    accepted=$(curl -s -H "Authorization: Bearer $TOKEN" "http://$admin/status" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["queue"]["accepted"])')
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    if [[ -n $redis_pid ]]; then
        kill "$redis_pid"
        wait "$redis_pid" 2>/dev/null || true
    fi
    local failed rps
    failed=$(awk '/^Failed requests:/ {print $3}' "$TMP/ab.log")
    rps=$(awk '/^Requests per second:/ {print $4}' "$TMP/ab.log")
    if [[ ${failed:-0} != 0 || $accepted != "$N" ]]; then
        echo "$backend c=$c: ${failed:-?} failed, $accepted of $N accepted" >&2
        cat "$TMP/ab.log" "$TMP/sc.log" >&2
        exit 3
    fi
    echo "$rps"
}

printf '%-15s %6s %12s\n' backend conns accepts/s
for b in $BACKENDS; do
    for c in $CONNS; do
        printf '%-15s %6s %12s\n' "$b" "$c" "$(run "$b" "$c")"
    done
done
