#!/usr/bin/env bash
# System calls and context switches per proxied order, the sidecar and nginx
# side by side: the kernel half of an order's cost, which the instruction
# counts of benches/instructions.sh do not see. Counted, not timed: the
# counts move little with the machine's load (a proxy that gets less CPU
# finds more events per epoll_wait, so compare targets of the same run).
#
# Set-up as in benches/load.sh: the proxy under test pinned to CPU 0 with one
# worker, the simulator and wrk (1 thread, keep-alive, configs/load.lua: the
# simulator's SAMPLE_ORDER body) on CPU 1, 256 idle upstream connections
# allowed; the sidecar variants of load.sh (`sidecar`: every feature on,
# OTLP export every 1 s to a local rotel-agent on CPU 1; `sc-nootlp`, ...),
# access log off as nginx's, idle polling off (`server.busy_poll = "0s"`:
# each polling round is one more epoll_wait, which is not an order's work
# but time the CPU would otherwise sleep). Per target and connection count: a
# 1 s warm-up, then S seconds of orders while `perf stat` counts the proxy's
# system calls on their tracepoints (in the kernel, no stop per call, unlike
# strace) and its context switches.
#
#   bash benches/syscalls.sh                          sidecar and nginx, c = 1, 32, 256
#   bash benches/syscalls.sh --conns 32 --secs 5
#   bash benches/syscalls.sh --targets "sidecar sc-bare nginx haproxy"
#   bash benches/syscalls.sh --bin path/to/factory-sidecar   (compare builds)
#
# Columns, per order: calls of each system call worth its own column, then
# all others, the total, reads that found nothing (EAGAIN), context
# switches (the proxy blocked in epoll_wait and was woken, or was
# preempted) and CPU time, of which the part spent in the kernel (system
# time from /proc/PID/stat: the TCP stack, which on loopback also does the
# receiving side's work for every segment the proxy sends); the TCP
# segments and pure ACKs sent on the whole machine (nstat; four per order is
# the floor for a proxy: request in, request out, answer in, answer out);
# then context switches and CPU time for the load side, wrk and the
# simulator on CPU 1, whose work a proxy also shapes (a proxy that sends in
# bursts wakes them less often). CPU times are times: compare them within a
# run. Needs perf, wrk and taskset; loopback only; about 5 s per target and
# connection count.
set -euo pipefail

TARGETS="sidecar nginx" CONNS="1 32 256" SECS=3 BIN=""
while (($#)); do
    case "$1" in
    --targets) TARGETS=${2:?}; shift ;;
    --conns) CONNS=${2:?}; shift ;;
    --secs) SECS=${2:?}; shift ;;
    --bin) BIN=${2:?}; shift ;;
    -h | --help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "syscalls.sh: unknown option '$1'" >&2; exit 1 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for tool in perf wrk taskset curl; do
    command -v "$tool" >/dev/null || { echo "syscalls.sh: needs $tool" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
if [[ -z $BIN ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/factory-sidecar
fi
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
bench_constants "$ROOT" || exit 1
PROXY_CPU=0 LOAD_CPU=1

TMP=$(mktemp -d "${TMPDIR:-/tmp}/factory-syscalls.XXXXXX")
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT

start_sim "$TMP/sim.out" "$BIN" || exit 1
PIDS+=("$SIM_PID")
taskset -a -p -c "$LOAD_CPU" "$SIM_PID" >/dev/null

# The OTLP collector for the variants that export (as in benches/load.sh),
# on the load CPU; without one they run without export, and say so.
OTLP=""
if [[ " $TARGETS " =~ \ (sidecar|sc-noretry|sc-nochaos)\  ]]; then
    if ROTEL=$(find_rotel); then
        otlp_port=$(free_port)
        taskset -c "$LOAD_CPU" "$ROTEL" start --otlp-http-endpoint "127.0.0.1:$otlp_port" \
            --otlp-grpc-endpoint "127.0.0.1:$(free_port)" --exporter blackhole >"$TMP/rotel.out" 2>&1 &
        PIDS+=($!)
        for _ in $(seq 200); do
            curl -s -o /dev/null -m 1 "http://127.0.0.1:$otlp_port/" && break
            sleep 0.05
        done
        OTLP="http://127.0.0.1:$otlp_port"
    else
        echo "no rotel-agent (pip install --pre rotel): every sidecar variant runs without OTLP export" >&2
    fi
fi

# Starts TARGET pinned to the proxy CPU on a free port; sets PID and LISTEN.
start_target() { # target
    local target=$1 admin
    LISTEN=127.0.0.1:$(free_port)
    case $target in
    nginx)
        mkdir -p "$TMP/nginx-tmp"
        sed -e "s|@TMP@|$TMP|g" -e "s|@UPSTREAM@|$UP|g" -e "s|@POOL@|256|g" -e "s|@LISTEN@|$LISTEN|g" \
            "$ROOT/benches/configs/nginx.conf.in" | sed 's/^daemon off;/daemon off;\nmaster_process off;/' >"$TMP/nginx.conf"
        taskset -c "$PROXY_CPU" "$NGINX" -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" >"$TMP/t.log" 2>&1 &
        ;;
    haproxy)
        sed -e "s|@TMP@|$TMP|g" -e "s|@UPSTREAM@|$UP|g" -e "s|@POOL@|256|g" -e "s|@LISTEN@|$LISTEN|g" \
            "$ROOT/benches/configs/haproxy.cfg.in" >"$TMP/haproxy.cfg"
        taskset -c "$PROXY_CPU" "$HAPROXY" -db -f "$TMP/haproxy.cfg" >"$TMP/t.log" 2>&1 &
        ;;
    sidecar | sc-noretry | sc-nochaos | sc-nootlp | sc-bare)
        # As benches/load.sh: max_attempts breaker chaos otlp.
        local v otlp=""
        case $target in
        sidecar) v=(3 true true on) ;;
        sc-noretry) v=(1 false true on) ;;
        sc-nochaos) v=(3 true false on) ;;
        sc-nootlp) v=(3 true true off) ;;
        sc-bare) v=(1 false false off) ;;
        esac
        [[ ${v[3]} == on ]] && otlp=$OTLP
        admin=127.0.0.1:$(free_port)
        sed -e "s|@LISTEN@|$LISTEN|" -e "s|@ADMIN@|$admin|" -e "s|@TOKEN@|syscalls-bench|" \
            -e "s|@UPSTREAM@|$UP|" -e "s|@POOL@|256|" -e "s|@MAX_ATTEMPTS@|${v[0]}|" \
            -e "s|@BREAKER@|${v[1]}|" -e "s|@CHAOS@|${v[2]}|g" -e "s|@OTLP@|$otlp|" \
            -e "s|@BUSY_POLL@|0s|" "$ROOT/benches/configs/sidecar.toml.in" >"$TMP/$target.toml"
        # Idle polling (server.busy_poll) off: it would add an epoll_wait
        # per polling round; these counts are the work an order takes.
        env TOKIO_WORKER_THREADS=1 RUST_LOG=warn taskset -c "$PROXY_CPU" \
            "$BIN" run --config "$TMP/$target.toml" >"$TMP/t.log" 2>&1 &
        ;;
    *) echo "unknown target $target" >&2; exit 1 ;;
    esac
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 300); do
        curl -s -o /dev/null -m 1 -H "authorization: Bearer $BENCH_KEY" -H 'content-type: application/json' \
            --data-raw "$BENCH_BODY" "http://$LISTEN/api/order" && return 0
        kill -0 "$PID" 2>/dev/null || { cat "$TMP/t.log" >&2; exit 1; }
        sleep 0.05
    done
    echo "$target did not answer an order" >&2
    exit 1
}

stop_target() {
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
}

# wrk for SECS seconds at CONNS connections, its context switches and CPU
# time counted into $TMP/wrk.stat; prints the orders answered.
orders() { # conns secs
    perf stat -x, -e context-switches,task-clock -o "$TMP/wrk.stat" taskset -c "$LOAD_CPU" wrk -t1 -c"$1" -d"$2s" --timeout 5s -s "$ROOT/benches/configs/load.lua" \
        "http://$LISTEN/api/order" >"$TMP/wrk.out" 2>&1
    local result
    result=$(grep '^RESULT' "$TMP/wrk.out") || { cat "$TMP/wrk.out" >&2; exit 1; }
    if [[ $result != *" http_errors=0 connect=0 read=0 write=0 timeout=0"* ]]; then
        echo "errors under load: $result" >&2
        exit 3
    fi
    sed 's/.* requests=\([0-9]*\).*/\1/' <<<"$result"
}

# The system calls worth a column of their own; the rest are "other".
COLS=(read recvfrom write sendto writev epoll_wait epoll_ctl futex getsockopt)
# Reads that may find nothing (EAGAIN, -11).
READS=(read recvfrom readv recvmsg)
EVENTS=raw_syscalls:sys_enter,context-switches,task-clock
for c in "${COLS[@]}"; do EVENTS+=",syscalls:sys_enter_$c"; done
FILTERED=()
for r in "${READS[@]}"; do FILTERED+=(-e "syscalls:sys_exit_$r" --filter 'ret == -11'); done

# Counts the proxy's system calls, and the load side's (wrk and the
# simulator) context switches and CPU time, while wrk runs; prints "name
# count" lines, "orders N" first.
count() { # conns
    perf stat -x, -e "$EVENTS" "${FILTERED[@]}" -p "$PID" -o "$TMP/perf.out" &
    local stat=$! n
    perf stat -x, -e context-switches,task-clock -p "$SIM_PID" -o "$TMP/sim.stat" &
    local sim=$!
    # perf prints nothing until it ends; give it a moment to attach.
    sleep 0.5
    local t0 t1
    t0=$(cpu_ticks "$PID")
    NSTAT_HISTORY=$TMP/nstat.hist nstat -n >/dev/null
    n=$(orders "$1" "$SECS")
    NSTAT_HISTORY=$TMP/nstat.hist nstat -z TcpOutSegs TcpExtTCPPureAcks 2>/dev/null |
        awk '$1 == "TcpOutSegs" { print "segs", $2 } $1 == "TcpExtTCPPureAcks" { print "pureacks", $2 }'
    t1=$(cpu_ticks "$PID")
    kill -INT "$stat" "$sim"
    wait "$stat" "$sim" 2>/dev/null || true
    echo "orders $n"
    # The kernel's part of the proxy's CPU time (cpu_ticks: "total system").
    awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN { split(a, x, " "); split(b, y, " "); print "sys_s", (y[2] - x[2]) / hz }'
    # "count,unit,event,..."; the filtered exits count EAGAIN reads.
    awk -F, '$1 ~ /^[0-9.]+$/ { e = $3; sub(/^syscalls:sys_enter_/, "", e)
             if (e ~ /^syscalls:sys_exit_/) e = "eagain"; s[e] += $1 }
             END { for (e in s) print e, s[e] }' "$TMP/perf.out"
    # task-clock is in milliseconds.
    awk -F, '$1 ~ /^[0-9.]+$/ { s["load_" $3] += $1 } END { for (e in s) print e, s[e] }' \
        "$TMP/wrk.stat" "$TMP/sim.stat"
}

printf 'per order (%s s of wrk per point)\n\n| target | conns |' "$SECS"
for c in "${COLS[@]}"; do printf ' %s |' "$c"; done
printf ' other | **total** | EAGAIN reads | context switches | CPU µs | of which kernel µs | TCP segments (machine) | pure ACKs (machine) | load side: context switches | load side: CPU µs |\n|---|---:|'
for _ in "${COLS[@]}"; do printf -- '---:|'; done
printf -- '---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for conns in $CONNS; do
    for t in $TARGETS; do
        start_target "$t"
        orders "$conns" 1 >/dev/null
        count "$conns" >"$TMP/counts"
        stop_target
        awk -v cols="${COLS[*]}" -v t="$t" -v c="$conns" '
            $1 == "orders" { n = $2; next } { v[$1] = $2 }
            END {
                k = split(cols, col, " ")
                printf "| %s | %s |", t, c
                other = v["raw_syscalls:sys_enter"]
                for (i = 1; i <= k; i++) { printf " %.2f |", v[col[i]] / n; other -= v[col[i]] }
                printf " %.2f | **%.2f** | %.2f | %.2f | %.1f | %.1f | %.2f | %.3f | %.2f | %.1f |\n", other / n,
                    v["raw_syscalls:sys_enter"] / n, v["eagain"] / n, v["context-switches"] / n,
                    1000 * v["task-clock"] / n, 1e6 * v["sys_s"] / n, v["segs"] / n, v["pureacks"] / n,
                    v["load_context-switches"] / n, 1000 * v["load_task-clock"] / n
            }' "$TMP/counts"
    done
done
