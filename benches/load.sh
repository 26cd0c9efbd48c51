#!/usr/bin/env bash
# Side-by-side load benchmark: in ONE run, with the same load generator (wrk)
# and settings for every target, measures the factory simulator directly,
# nginx and haproxy as equivalent keep-alive reverse proxies, factory-sidecar
# with every feature on, and sidecar variants with features off. Prints
# throughput/latency tables, RSS, start-up times and the performance targets,
# and writes them into benches/README.md.
#
# Two scenarios in the same run: one token (the simulator's cheap path answers
# every order with the same JWT, which the sidecar's memory of recent tokens
# checks for free) and fresh tokens (nginx-fresh and sidecar-fresh in front of
# a second simulator started with --token-pool 256: every order carries another
# JWT, as with the real factory, so the sidecar pays one RSA check per order).
# The RSA floor, `openssl speed rsa2048` verify on the proxies' CPU, is measured
# in the same run and set against the sidecar's extra CPU per fresh-token order.
#
# Not a test and not run in CI; loopback only. See benches/README.md.
#
#   bash benches/load.sh            full run  (about 8 minutes)
#   bash benches/load.sh --quick    quick run (about 2 minutes)
#   bash benches/load.sh --help
set -euo pipefail

usage() {
    cat <<'EOF'
usage: benches/load.sh [options]

  --quick           3 s per point, 1 s warm-up, 1 round, 3 start-up samples
  --duration S      seconds measured per point        (full: 5)
  --warmup S        seconds of warm-up before a point (full: 1)
  --rounds N        rounds over all targets; figures are medians (full: 3)
  --conns "A B C"   connection counts                  (default: "1 32 256")
  --startups N      start-up samples per proxy         (full: 5)
  --pool N          idle upstream keep-alive connections kept by every proxy
                    (default 256, the largest connection count, so no proxy
                    churns upstream connections; 64 is the sidecar's default)
  --nice N          run every benchmarked process and wrk with nice -n N
                    (e.g. -5 on a machine shared with builds; needs root)
  --no-pin          do not pin processes to CPUs
  --no-install      do not install missing tools (apt-get, pip)
  --no-build        use the existing release binary (and PGO binary, with --pgo)
  --pgo             every sidecar variant runs the profile-guided build
                    (benches/pgo.sh); one more target, sc-nopgo, runs the
                    plain release build with every feature on
  --no-fresh        skip the fresh-token scenario (nginx-fresh, sidecar-fresh,
                    the RSA floor)
  --halt-poll NS    for the run, set the guest kernel's idle polling
                    (/sys/module/haltpoll/parameters/guest_halt_poll_ns; the
                    kernel's default is 200000, some VMs ship 0) and put the
                    old value back at the end; needs root and the haltpoll
                    cpuidle driver. The machine line reports the value either way
  --no-write        print results only; leave benches/README.md alone
  --keep            keep the temporary directory (configs, logs, raw results)
  -h, --help        this text

Pinning (default, needs 2+ CPUs): every proxy under test on CPU 0 with one
worker; wrk, the simulator and the OTLP collector on CPU 1. Exit status: 0,
1 on a usage or set-up error, 3 when a target failed or answered errors.
EOF
}

# ---------------------------------------------------------------- options
QUICK=0 PIN=1 INSTALL=1 BUILD=1 WRITE=1 KEEP=0 PGO=0 FRESH=1 HALT_POLL=""
DURATION="" WARMUP="" ROUNDS="" STARTUPS="" CONNS="1 32 256" POOL=256 NICE=""
while (($#)); do
    case "$1" in
    --quick) QUICK=1 ;;
    --duration) DURATION=${2:?--duration needs seconds}; shift ;;
    --warmup) WARMUP=${2:?--warmup needs seconds}; shift ;;
    --rounds) ROUNDS=${2:?--rounds needs a number}; shift ;;
    --conns) CONNS=${2:?--conns needs a list}; shift ;;
    --startups) STARTUPS=${2:?--startups needs a number}; shift ;;
    --pool) POOL=${2:?--pool needs a number}; shift ;;
    --nice) NICE=${2:?--nice needs a niceness}; shift ;;
    --no-pin) PIN=0 ;;
    --no-install) INSTALL=0 ;;
    --no-build) BUILD=0 ;;
    --pgo) PGO=1 ;;
    --no-fresh) FRESH=0 ;;
    --halt-poll) HALT_POLL=${2:?--halt-poll needs nanoseconds}; shift ;;
    --no-write) WRITE=0 ;;
    --keep) KEEP=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "load.sh: unknown option '$1' (see --help)" >&2; exit 1 ;;
    esac
    shift
done
if ((QUICK)); then
    : "${DURATION:=3}" "${WARMUP:=1}" "${ROUNDS:=1}" "${STARTUPS:=3}"
else
    : "${DURATION:=5}" "${WARMUP:=1}" "${ROUNDS:=3}" "${STARTUPS:=5}"
fi
NICE_CMD=()
if [[ -n $NICE ]]; then
    [[ $NICE =~ ^-?[0-9]+$ ]] || { echo "load.sh: --nice must be an integer" >&2; exit 1; }
    NICE_CMD=(nice -n "$NICE")
fi
for v in DURATION WARMUP ROUNDS STARTUPS POOL; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || { echo "load.sh: --${v,,} must be a positive integer" >&2; exit 1; }
done
for c in $CONNS; do
    [[ $c =~ ^[0-9]+$ && $c -ge 1 ]] || { echo "load.sh: --conns: '$c' is not a positive integer" >&2; exit 1; }
done
MAXCONN=$(tr ' ' '\n' <<<"$CONNS" | sort -n | tail -1)
# The guest kernel's idle polling: with it off (0), a CPU with nothing to do
# halts at once, and waking it (an interrupt through the hypervisor) is paid
# by whoever wakes it; with it on, the CPU spins that long first. It moves
# the figures at one connection more than any proxy does.
HALT_POLL_FILE=/sys/module/haltpoll/parameters/guest_halt_poll_ns
HALT_POLL_OLD=$(cat "$HALT_POLL_FILE" 2>/dev/null || true)
if [[ -n $HALT_POLL ]]; then
    [[ $HALT_POLL =~ ^[0-9]+$ ]] || { echo "load.sh: --halt-poll must be nanoseconds" >&2; exit 1; }
    [[ -n $HALT_POLL_OLD ]] || { echo "load.sh: --halt-poll: no $HALT_POLL_FILE (not a guest with the haltpoll cpuidle driver)" >&2; exit 1; }
    [[ -w $HALT_POLL_FILE ]] || { echo "load.sh: --halt-poll: cannot write $HALT_POLL_FILE (root?)" >&2; exit 1; }
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONF=$ROOT/benches/configs
README=$ROOT/benches/README.md
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh" # bench_constants, find_rotel, cpu_ticks (its free_port is replaced below)

log() { printf '[load %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[load] error: %s\n' "$*" >&2; exit 1; }
now_us() { local t=${EPOCHREALTIME/[.,]/}; echo "$((10#$t))"; }

# ---------------------------------------------------------------- cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/factory-load.XXXXXX")
PIDS=()
cleanup() {
    local rc=$? pid child all=() i
    trap - EXIT INT TERM
    [[ -z $HALT_POLL || -z $HALT_POLL_OLD ]] || echo "$HALT_POLL_OLD" >"$HALT_POLL_FILE" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do
        # nginx's worker is the master's child: take it too, by parent pid.
        for child in $(pgrep -P "$pid" 2>/dev/null || true); do all+=("$child"); done
        all+=("$pid")
    done
    for pid in "${all[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${all[@]}"; do
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        { kill -KILL "$pid"; wait "$pid"; } 2>/dev/null || true
    done
    if ((KEEP)); then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Set only now, so that cleanup puts the old value back whatever happens.
[[ -z $HALT_POLL ]] || echo "$HALT_POLL" >"$HALT_POLL_FILE" || die "--halt-poll: cannot write $HALT_POLL_FILE"

# Stops one process this script started (TERM, then KILL after 5 s). Sets
# STOP_US to the time from SIGTERM to exit, or empty when it had to be killed.
stop_pid() {
    local pid=$1 i child kids t0
    kids=$(pgrep -P "$pid" 2>/dev/null || true)
    t0=$(now_us)
    kill -TERM "$pid" 2>/dev/null || true
    STOP_US=""
    for ((i = 0; i < 500; i++)); do
        # Exited but not yet reaped (a zombie) counts as exited.
        if ! kill -0 "$pid" 2>/dev/null || grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
            STOP_US=$(($(now_us) - t0))
            break
        fi
        sleep 0.01
    done
    for child in $kids; do kill -KILL "$child" 2>/dev/null || true; done
    # KILL and reap in one group with stderr closed: bash would otherwise
    # print a "Killed" job notice when it reaps the process later.
    { kill -KILL "$pid"; wait "$pid"; } 2>/dev/null || true
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- tools
NEED_APT=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || NEED_APT+=(nginx)
command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || NEED_APT+=(haproxy)
command -v wrk >/dev/null || NEED_APT+=(wrk)
command -v curl >/dev/null || NEED_APT+=(curl)
command -v pgrep >/dev/null || NEED_APT+=(procps)
if ((PIN)); then command -v taskset >/dev/null || NEED_APT+=(util-linux); fi
if ((FRESH)); then command -v openssl >/dev/null || NEED_APT+=(openssl); fi
if ((${#NEED_APT[@]})); then
    ((INSTALL)) || die "missing: ${NEED_APT[*]} (run without --no-install, or: apt-get install -y ${NEED_APT[*]})"
    command -v apt-get >/dev/null || die "missing ${NEED_APT[*]} and no apt-get to install them"
    SUDO=""
    ((EUID == 0)) || SUDO=sudo
    log "installing ${NEED_APT[*]} (apt-get)"
    $SUDO apt-get update -qq >"$TMP/apt.log" 2>&1 || { cat "$TMP/apt.log" >&2; die "apt-get update failed"; }
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${NEED_APT[@]}" >>"$TMP/apt.log" 2>&1 ||
        { tail -20 "$TMP/apt.log" >&2; die "apt-get install ${NEED_APT[*]} failed"; }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

# The OTLP collector (rotel-agent, from `pip install --pre rotel`). Optional:
# without it only the OTLP variant is skipped, and the run says so.
ROTEL=$(find_rotel || true)
if [[ -z $ROTEL ]] && ((INSTALL)); then
    PIP=$(command -v pip3 || command -v pip || true)
    if [[ -n $PIP ]]; then
        log "installing rotel (pip install --pre rotel) for the OTLP collector"
        "$PIP" install -q --pre rotel >"$TMP/pip.log" 2>&1 || log "pip install rotel failed (see --keep $TMP/pip.log)"
        ROTEL=$(find_rotel || true)
    fi
fi
OTLP_SKIP=""
[[ -n $ROTEL ]] || OTLP_SKIP="no OTLP collector: rotel-agent not found and 'pip install --pre rotel' failed or was not allowed"

NPROC=$(nproc)
if ((PIN)) && ((NPROC < 2)); then
    log "only $NPROC CPU: not pinning"
    PIN=0
fi
PROXY_CPU=0 LOAD_CPU=1
# Pin this script (and so, by inheritance, everything not pinned explicitly)
# to the load generator's CPU, away from the proxy under test.
((PIN)) && taskset -cp "$LOAD_CPU" $$ >/dev/null

# ---------------------------------------------------------------- build
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release/factory-sidecar
if ((BUILD)); then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
fi
[[ -x $BIN ]] || die "no binary at $BIN (build it: cargo build --release)"
# Every sidecar variant runs SC_BIN; with --pgo that is the profile-guided
# build and sc-nopgo runs the plain one ($BIN).
SC_BIN=$BIN
if ((PGO)); then
    SC_BIN=$(bash "$ROOT/benches/pgo.sh" --print)
    if ((BUILD)); then
        log "benches/pgo.sh (profile-guided build)"
        bash "$ROOT/benches/pgo.sh" || die "benches/pgo.sh failed"
    fi
    [[ -x $SC_BIN ]] || die "no PGO binary at $SC_BIN (build it: bash benches/pgo.sh)"
fi

# The order body and test apiKey: the simulator's own constants, so the
# benchmark sends exactly what the tests and the demo send.
bench_constants "$ROOT" || die "no order body or apiKey for the load"

# ---------------------------------------------------------------- helpers
# Runs a command pinned to a CPU (or not, with --no-pin), in the background,
# stdout/stderr to $TMP/NAME.{out,err}; sets SPAWNED.
spawn() {
    local name=$1 cpu=$2
    shift 2
    if ((PIN)); then
        taskset -c "$cpu" "${NICE_CMD[@]}" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    else
        "${NICE_CMD[@]}" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    fi
    SPAWNED=$!
    PIDS+=("$SPAWNED")
}

# A free loopback port below the ephemeral range (so wrk's and the proxies'
# outgoing connections cannot take it), not handed out before in this run.
USED_PORTS=" "
free_port() { # VAR: sets VAR (not echoed: the used-port list must persist)
    local p i fd
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if { exec {fd}<>"/dev/tcp/127.0.0.1/$p"; } 2>/dev/null; then
            exec {fd}>&-
            continue
        fi
        USED_PORTS+="$p "
        printf -v "$1" '%s' "$p"
        return 0
    done
    die "no free loopback port found"
}

# One HTTP/1.1 GET with bash's /dev/tcp (no fork, so start-up polling is
# fine-grained); sets HTTP_STATUS. Fails when nothing answers.
http_get() {
    local addr=$1 path=$2 fd ver code
    HTTP_STATUS=""
    { exec {fd}<>"/dev/tcp/${addr%:*}/${addr##*:}"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$addr" >&"$fd" 2>/dev/null || { exec {fd}>&-; return 1; }
    IFS=' ' read -r -t 5 -u "$fd" ver code _ 2>/dev/null || true
    exec {fd}>&-
    [[ $ver == HTTP/* && $code =~ ^[0-9]{3}$ ]] || return 1
    HTTP_STATUS=$code
}

# Polls until ADDR answers PATH (with status WANT, or any status when WANT is
# empty); busy-polls for the first second (start-up timing), then every 20 ms.
# Fails after TIMEOUT seconds or when PID has exited.
wait_http() {
    local pid=$1 addr=$2 path=$3 want=$4 timeout=${5:-20}
    local start deadline t
    start=$(now_us)
    deadline=$((start + timeout * 1000000))
    while :; do
        if http_get "$addr" "$path" && [[ -z $want || $HTTP_STATUS == "$want" ]]; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        t=$(now_us)
        ((t < deadline)) || return 1
        ((t - start < 1000000)) || sleep 0.02
    done
}

# Status and body of one real order through ADDR (curl).
order_via() {
    curl -sS --max-time 10 -o "$TMP/order.body" -w '%{http_code}' \
        -H "authorization: Bearer $BENCH_KEY" -H 'content-type: application/json' \
        --data-raw "$BENCH_BODY" "http://$1/api/order" 2>"$TMP/order.err" || echo 000
}


# Seconds a sidecar target has spent polling with nothing to do
# (server.busy_poll) so far, from its /metrics; 0 for every other target.
poll_seconds() { # name
    [[ -n ${ADMIN[$1]:-} ]] || { echo 0; return; }
    curl -sS --max-time 5 -H "authorization: Bearer $ADMIN_TOKEN" "http://${ADMIN[$1]}/metrics" 2>/dev/null |
        awk '$1 == "sidecar_busy_poll_idle_seconds_total" { v = $2 } END { printf "%.6f\n", v + 0 }'
}

# Busy and total ticks of one CPU so far (/proc/stat; busy is all but idle
# and iowait): whether the load generator's CPU, not the proxy, was the limit.
cpu_busy() { # cpu
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# Interrupts that woke or preempted a task on CPU N so far: rescheduling and
# function-call interrupts (/proc/interrupts RES and CAL), the ones a
# wake-up from the other CPU sends. On a VM each is an exit to the
# hypervisor, paid by the CPU that sends it.
wakeups() { # cpu
    awk -v col=$(($1 + 2)) '$1 == "RES:" || $1 == "CAL:" { n += $col } END { print n + 0 }' /proc/interrupts
}

# Sum of a /proc/PID/status field (VmRSS, VmHWM) over PID and its children, in KiB.
mem_kib() {
    local field=$1 pid=$2 sum=0 p v
    for p in "$pid" $(pgrep -P "$pid" 2>/dev/null || true); do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null || true)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}

fill() { # template out key=value...
    local tpl=$1 out=$2 expr=() kv
    shift 2
    for kv in "$@"; do expr+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${expr[@]}" "$tpl" >"$out"
    if grep -q '@[A-Z_]*@' "$out"; then die "unfilled placeholder in $out: $(grep -o '@[A-Z_]*@' "$out" | head -1)"; fi
}

# ---------------------------------------------------------------- upstream
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
# CPU time the hypervisor gave to others (steal) while the run lasted: a VM
# with steal above a few percent measures its neighbours as much as the proxies.
machine_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $9}' /proc/stat; }
read -r TICKS_START STEAL_START < <(machine_ticks)
if awk -v l="${LOADAVG_START%% *}" 'BEGIN { exit !(l > 0.5) }'; then
    log "WARNING: load average $LOADAVG_START before the run: other work on this machine will add noise"
fi
log "temp dir $TMP; pinning: $( ((PIN)) && echo "proxies CPU $PROXY_CPU, load+upstream CPU $LOAD_CPU" || echo off)"

# Starts a simulator on the load CPU; sets SIM_PID and SIM_ADDR.
start_sim() { # name [sim args...]
    local name=$1 i
    shift
    spawn "$name" "$LOAD_CPU" env TOKIO_WORKER_THREADS=1 RUST_LOG=warn "$BIN" sim --listen 127.0.0.1:0 "$@"
    SIM_PID=$SPAWNED
    SIM_ADDR=""
    for ((i = 0; i < 500; i++)); do
        SIM_ADDR=$(sed -n 's|^sim listening on http://\(.*\)$|\1|p' "$TMP/$name.out" | head -1)
        [[ -n $SIM_ADDR ]] && break
        kill -0 "$SIM_PID" 2>/dev/null || { cat "$TMP/$name.err" >&2; die "the simulator ($name) exited at start"; }
        sleep 0.02
    done
    [[ -n $SIM_ADDR ]] || die "the simulator ($name) did not print 'sim listening on ...' within 10 s"
}
# The fresh-token simulator: 256 distinct tokens per order body, more than
# the sidecar remembers (16), answered in turn.
TOKEN_POOL=256
SIM_FRESH_ADDR=""
if ((FRESH)); then
    start_sim sim-fresh --token-pool "$TOKEN_POOL"
    SIM_FRESH_ADDR=$SIM_ADDR
    log "fresh-token simulator (--token-pool $TOKEN_POOL) at $SIM_FRESH_ADDR"
fi
start_sim sim
log "simulator at $SIM_ADDR"

ROTEL_PID="" OTLP_URL=""
if [[ -z $OTLP_SKIP ]]; then
    free_port otlp_http
    free_port otlp_grpc
    spawn rotel "$LOAD_CPU" "$ROTEL" start --otlp-http-endpoint "127.0.0.1:$otlp_http" \
        --otlp-grpc-endpoint "127.0.0.1:$otlp_grpc" --exporter blackhole
    ROTEL_PID=$SPAWNED
    if wait_http "$ROTEL_PID" "127.0.0.1:$otlp_http" / "" 15; then
        OTLP_URL="http://127.0.0.1:$otlp_http"
        log "OTLP collector (rotel-agent, blackhole exporter) at $OTLP_URL"
    else
        OTLP_SKIP="rotel-agent did not start: $(tail -3 "$TMP/rotel.err" | tr '\n' ' ')"
        stop_pid "$ROTEL_PID"
        ROTEL_PID=""
    fi
fi
[[ -z $OTLP_SKIP ]] || log "WARNING: $OTLP_SKIP; OTLP export is off in every sidecar variant and the OTLP comparison is skipped"

# ---------------------------------------------------------------- targets
# name | kind | description
TARGETS=(direct nginx haproxy sidecar)
declare -A DESC=(
    [direct]="the simulator itself, no proxy"
    [nginx]="nginx $(${NGINX} -v 2>&1 | sed 's|.*/||'), 1 worker, upstream keepalive $POOL"
    [haproxy]="haproxy $(${HAPROXY} -v 2>/dev/null | awk 'NR==1{print $3}'), nbthread 1, http-reuse always"
    [sidecar]="factory-sidecar, every feature on (retry, breaker, chaos, JWT verify, redaction, OTLP)"
    [sc-noretry]="sidecar, retry.max_attempts = 1 and circuit_breaker.enabled = false"
    [sc-nochaos]="sidecar, chaos.detect/verify_jwt/redact_in_responses = false"
    [sc-nootlp]="sidecar, telemetry.otlp_endpoint = \"\""
    [sc-bare]="sidecar, all of the above off"
    [sc-nopoll]="sidecar, every feature on, server.busy_poll = \"0s\" (sleeps in epoll_wait at once, as nginx)"
    [sc-nopgo]="sidecar, every feature on, the plain release build (not profile-guided)"
    [nginx-fresh]="nginx as above, in front of the fresh-token simulator"
    [sidecar-fresh]="sidecar, every feature on, in front of the fresh-token simulator (one RSA check per order)"
)
# Sidecar variants: max_attempts breaker chaos otlp busy_poll
declare -A VARIANT=(
    [sidecar]="3 true true on 50us"
    [sc-noretry]="1 false true on 50us"
    [sc-nochaos]="3 true false on 50us"
    [sc-nootlp]="3 true true off 50us"
    [sc-bare]="1 false false off 50us"
    [sc-nopoll]="3 true true on 0s"
    [sc-nopgo]="3 true true on 50us"
    [sidecar-fresh]="3 true true on 50us"
)
SIDECARS=(sidecar sc-noretry sc-nochaos)
[[ -z $OTLP_SKIP ]] && SIDECARS+=(sc-nootlp)
SIDECARS+=(sc-bare sc-nopoll)
if ((PGO)); then
    SIDECARS+=(sc-nopgo)
    DESC[sidecar]+=", profile-guided build (benches/pgo.sh)"
fi
[[ -z $OTLP_SKIP ]] || DESC[sidecar]+=" (OTLP export OFF: no collector)"
TARGETS+=("${SIDECARS[@]:1}")
if ((FRESH)); then
    SIDECARS+=(sidecar-fresh)
    TARGETS+=(nginx-fresh sidecar-fresh)
fi
# The upstream of a target: the fresh-token simulator for NAME-fresh.
upstream_of() { if [[ $1 == *-fresh ]]; then echo "$SIM_FRESH_ADDR"; else echo "$SIM_ADDR"; fi; }

declare -A ADDR PID ADMIN FLAG CFG
# Admin token of every sidecar variant: random per run, never printed.
ADMIN_TOKEN=bench-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
ADDR[direct]=$SIM_ADDR
PID[direct]=$SIM_PID

write_sidecar_config() { # name listen admin
    local name=$1 v otlp
    read -r -a v <<<"${VARIANT[$name]}"
    otlp=""
    [[ ${v[3]} == on && -n $OTLP_URL ]] && otlp=$OTLP_URL
    CFG[$name]=$TMP/$name.toml
    fill "$CONF/sidecar.toml.in" "${CFG[$name]}" LISTEN="$2" ADMIN="$3" TOKEN="$ADMIN_TOKEN" UPSTREAM="$(upstream_of "$name")" POOL="$POOL" \
        MAX_ATTEMPTS="${v[0]}" BREAKER="${v[1]}" CHAOS="${v[2]}" OTLP="$otlp" BUSY_POLL="${v[4]}"
    "$BIN" check --config "${CFG[$name]}" >"$TMP/$name.check" 2>&1 ||
        die "factory-sidecar check rejects the $name config: $(tail -5 "$TMP/$name.check")"
}

# Each nginx gets its own prefix directory (pid file, temp paths, logs).
declare -A NGINX_DIR
for n in nginx nginx-fresh; do
    [[ " ${TARGETS[*]} " == *" $n "* ]] || continue
    NGINX_DIR[$n]=$TMP/$n
    mkdir -p "${NGINX_DIR[$n]}/nginx-tmp"
    free_port port
    ADDR[$n]=127.0.0.1:$port
    fill "$CONF/nginx.conf.in" "$TMP/$n.conf" TMP="${NGINX_DIR[$n]}" UPSTREAM="$(upstream_of "$n")" POOL="$POOL" LISTEN="${ADDR[$n]}"
    "$NGINX" -t -q -p "${NGINX_DIR[$n]}" -e "${NGINX_DIR[$n]}/nginx-error.log" -c "$TMP/$n.conf" >"$TMP/$n.check" 2>&1 ||
        die "nginx -t rejects the $n config: $(cat "$TMP/$n.check")"
done
free_port port
ADDR[haproxy]=127.0.0.1:$port
fill "$CONF/haproxy.cfg.in" "$TMP/haproxy.cfg" TMP="$TMP" UPSTREAM="$SIM_ADDR" POOL="$POOL" LISTEN="${ADDR[haproxy]}"
"$HAPROXY" -c -q -f "$TMP/haproxy.cfg" >"$TMP/haproxy.check" 2>&1 ||
    die "haproxy -c rejects the config: $(cat "$TMP/haproxy.check")"
for s in "${SIDECARS[@]}"; do
    free_port port
    ADDR[$s]=127.0.0.1:$port
    free_port port
    ADMIN[$s]=127.0.0.1:$port
    write_sidecar_config "$s" "${ADDR[$s]}" "${ADMIN[$s]}"
done

# Starts a proxy target; sets SPAWNED. Readiness: the sidecar's /readyz is
# 200; nginx and haproxy answer an HTTP request on their port (proxied to the
# simulator, which says 404): both mean "ready to proxy".
start_target() {
    local name=$1
    case $name in
    nginx | nginx-fresh) spawn "$name" "$PROXY_CPU" "$NGINX" -p "${NGINX_DIR[$name]}" -e "${NGINX_DIR[$name]}/nginx-error.log" -c "$TMP/$name.conf" ;;
    haproxy) spawn haproxy "$PROXY_CPU" "$HAPROXY" -db -f "$TMP/haproxy.cfg" ;;
    sc-nopgo) spawn "$name" "$PROXY_CPU" env TOKIO_WORKER_THREADS=1 "$BIN" run --config "${CFG[$name]}" ;;
    *) spawn "$name" "$PROXY_CPU" env TOKIO_WORKER_THREADS=1 "$SC_BIN" run --config "${CFG[$name]}" ;;
    esac
}
wait_ready() {
    local name=$1 pid=$2
    case $name in
    nginx | nginx-fresh | haproxy) wait_http "$pid" "${ADDR[$name]}" /ready-probe "" 20 ;;
    *) wait_http "$pid" "${ADMIN[$name]}" /readyz 200 20 ;;
    esac
}

# ---------------------------------------------------------------- start-up time
declare -A STARTUP
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A STOPTIME
for name in sidecar nginx haproxy; do
    samples=() stops=() killed=0
    for ((k = 0; k < STARTUPS; k++)); do
        t0=$(now_us)
        start_target "$name"
        pid=$SPAWNED
        if ! wait_ready "$name" "$pid"; then
            tail -5 "$TMP/$name.err" >&2 || true
            die "$name did not become ready within 20 s (start-up sample $((k + 1)))"
        fi
        samples+=($(($(now_us) - t0)))
        stop_pid "$pid"
        if [[ -n $STOP_US ]]; then stops+=("$STOP_US"); else killed=$((killed + 1)); fi
    done
    # Shutdown while idle (no request in flight): SIGTERM to exit.
    if ((killed == 0)); then
        STOPTIME[$name]=$(printf '%s\n' "${stops[@]}" | median | awk '{ printf "%.0f ms", $1 / 1000 }')
    else
        STOPTIME[$name]="**did not exit within 5 s of SIGTERM in $killed of $STARTUPS samples (killed)**"
        log "WARNING: $name did not exit within 5 s of SIGTERM in $killed of $STARTUPS start-up samples (idle, nothing in flight)"
    fi
    med=$(printf '%s\n' "${samples[@]}" | median)
    lo=$(printf '%s\n' "${samples[@]}" | sort -n | head -1)
    hi=$(printf '%s\n' "${samples[@]}" | sort -n | tail -1)
    STARTUP[$name]=$(awk -v m="$med" -v l="$lo" -v h="$hi" -v n="$STARTUPS" 'BEGIN { printf "%.1f ms (min %.1f, max %.1f, n=%d)", m / 1000, l / 1000, h / 1000, n }')
    log "start-up $name: ${STARTUP[$name]}"
done

# ---------------------------------------------------------------- start all
for name in "${TARGETS[@]}"; do
    [[ $name == direct ]] && continue
    start_target "$name"
    PID[$name]=$SPAWNED
done
for name in "${TARGETS[@]}"; do
    [[ $name == direct ]] && continue
    if ! wait_ready "$name" "${PID[$name]}"; then
        FLAG[$name]="did not start: $(tail -2 "$TMP/$name.err" | tr '\n' ' ')"
        log "FLAG $name: ${FLAG[$name]}"
    fi
done
sleep 1 # let start-up work (timers, first exports) settle before reading idle RSS
declare -A RSS_IDLE RSS_PEAK
for name in "${TARGETS[@]}"; do
    [[ -z ${FLAG[$name]:-} ]] || continue
    RSS_IDLE[$name]=$(mem_kib VmRSS "${PID[$name]}")
done

# Every target must answer a real order correctly before it is measured.
for name in "${TARGETS[@]}"; do
    [[ -z ${FLAG[$name]:-} ]] || continue
    code=$(order_via "${ADDR[$name]}")
    if [[ $code != 200 ]] || ! grep -q '"jwt"' "$TMP/order.body"; then
        FLAG[$name]="a real order through it got HTTP $code: $(head -c 200 "$TMP/order.body" "$TMP/order.err" 2>/dev/null | tr '\n' ' ')"
        log "FLAG $name: ${FLAG[$name]}"
    fi
done

# Which features the sidecar binary actually has wired in: the parts its
# /status reports (a config key that is accepted is not proof that the
# layer behind it is in the stack). Printed with the results.
STATUS_PARTS="unknown"
if [[ -z ${FLAG[sidecar]:-} ]] && command -v python3 >/dev/null; then
    STATUS_PARTS=$(curl -sS --max-time 5 -H "authorization: Bearer $ADMIN_TOKEN" "http://${ADMIN[sidecar]}/status" 2>/dev/null |
        python3 -c '
import json, sys
generic = {"ready", "upstream", "uptimeSeconds", "version", "requests", "listen", "admin"}
d = json.load(sys.stdin)
print(", ".join(k for k in d if k not in generic and isinstance(d[k], dict)) or "none")
' 2>/dev/null || echo unknown)
fi
# OTLP export has no /status part; the sidecar logs "OTLP export on" at start.
if [[ -n $OTLP_URL ]] && grep -qs 'OTLP export on' "$TMP/sidecar.out" "$TMP/sidecar.err"; then
    STATUS_PARTS+=", OTLP export (its start-up log line)"
fi
log "sidecar features wired into this binary: $STATUS_PARTS"

# ---------------------------------------------------------------- RSA floor
# What one RSA-2048 verification costs on the proxies' CPU, pinned like the
# proxies: `openssl speed` verify, in µs. Measured before and after the load;
# the report uses their mean.
rsa_floor_us() {
    local cmd=("${NICE_CMD[@]}" openssl speed -mr -seconds 2 rsa2048)
    if ((PIN)); then cmd=(taskset -c "$PROXY_CPU" "${cmd[@]}"); fi
    # -mr: "+F2:<index>:<bits>:<signs/s>:<verifies/s>"
    "${cmd[@]}" 2>/dev/null | awk -F: '$1 == "+F2" && $3 == 2048 && $5 > 0 { printf "%.2f\n", 1e6 / $5; exit }'
}
FLOOR_BEFORE="" FLOOR_AFTER=""
if ((FRESH)); then
    FLOOR_BEFORE=$(rsa_floor_us || true)
    log "RSA floor (openssl speed rsa2048 verify, CPU $PROXY_CPU): ${FLOOR_BEFORE:-not measured} µs"
fi

# ---------------------------------------------------------------- load
RAW=$TMP/results.tsv
: >"$RAW"
run_wrk() { # target conns seconds outfile
    local name=$1 c=$2 secs=$3 out=$4 threads=1
    ((!PIN && c >= 2)) && threads=2
    local cmd=("${NICE_CMD[@]}" wrk -t"$threads" -c"$c" -d"${secs}s" --timeout 5s -s "$CONF/load.lua" "http://${ADDR[$name]}/api/order")
    if ((PIN)); then cmd=(taskset -c "$LOAD_CPU" "${cmd[@]}"); fi
    timeout $((secs + 30)) "${cmd[@]}" >"$out" 2>&1
}
points=0
for c in $CONNS; do for ((r = 0; r < ROUNDS; r++)); do for name in "${TARGETS[@]}"; do points=$((points + 1)); done; done; done
log "load: ${#TARGETS[@]} targets x conns {$CONNS} x $ROUNDS round(s), ${WARMUP}s warm-up + ${DURATION}s each: about $((points * (DURATION + WARMUP + 1) / 60 + 1)) min"
for c in $CONNS; do
    for ((r = 1; r <= ROUNDS; r++)); do
        # Targets interleaved within a round, so drift in the machine's
        # background load spreads over all of them instead of one.
        for name in "${TARGETS[@]}"; do
            [[ -z ${FLAG[$name]:-} ]] || continue
            kill -0 "${PID[$name]}" 2>/dev/null || { FLAG[$name]="exited during the run"; log "FLAG $name: exited"; continue; }
            run_wrk "$name" "$c" "$WARMUP" "$TMP/warm.out" || true
            poll0=$(poll_seconds "$name")
            read -r cpu0 sys0 < <(cpu_ticks "${PID[$name]}")
            read -r busy0 total0 < <(cpu_busy "$LOAD_CPU")
            wake0=$(wakeups "$LOAD_CPU")
            if ! run_wrk "$name" "$c" "$DURATION" "$TMP/wrk.out"; then
                FLAG[$name]="wrk failed at $c connections: $(tail -2 "$TMP/wrk.out" | tr '\n' ' ')"
                log "FLAG $name: ${FLAG[$name]}"
                continue
            fi
            line=$(grep '^RESULT ' "$TMP/wrk.out" | tail -1)
            [[ -n $line ]] || die "no RESULT line from wrk for $name: $(tail -3 "$TMP/wrk.out")"
            read -r cpu1 sys1 < <(cpu_ticks "${PID[$name]}")
            cpu=$((cpu1 - cpu0)) sys=$((sys1 - sys0))
            read -r busy1 total1 < <(cpu_busy "$LOAD_CPU")
            wake1=$(wakeups "$LOAD_CPU")
            poll1=$(poll_seconds "$name")
            # name conns round rps p50 p99 p999 max requests http_errors socket_errors cpu_us load_busy% poll_us kernel_us load_wakeups
            # (cpu_us and kernel_us leave out the idle polling, which poll_us
            # counts; it is taken from kernel time: it is mostly epoll_wait.)
            awk -v n="$name" -v c="$c" -v r="$r" -v cpu="$cpu" -v sys="$sys" -v hz="$CLK_TCK" -v wake=$((wake1 - wake0)) \
                -v poll="$(awk -v a="$poll0" -v b="$poll1" 'BEGIN { printf "%.6f", (b > a ? b - a : 0) }')" \
                -v busy=$((busy1 - busy0)) -v total=$((total1 - total0)) '{
                for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
                work = cpu / hz - poll; if (work < 0) work = 0
                kernel = sys / hz - poll; if (kernel < 0) kernel = 0; if (kernel > work) kernel = work
                # Polling is user and kernel time in a split nobody counts:
                # where it is more than a tenth of the work, no kernel share.
                if (poll > 0.1 * work) kernel = -1
                printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.0f\t%.2f\t%.2f\t%.3f\n", n, c, r, f["rps"], f["p50_us"], f["p99_us"],
                    f["p999_us"], f["max_us"], f["requests"], f["http_errors"],
                    f["connect"] + f["read"] + f["write"] + f["timeout"],
                    (f["requests"] > 0 ? work * 1e6 / f["requests"] : 0), (total > 0 ? 100 * busy / total : 0),
                    (f["requests"] > 0 ? poll * 1e6 / f["requests"] : 0),
                    (f["requests"] > 0 && kernel >= 0 ? kernel * 1e6 / f["requests"] : -1),
                    (f["requests"] > 0 ? wake / f["requests"] : 0)
            }' <<<"$line" >>"$RAW"
            log "$(printf '%-11s c=%-4s round %s: %s' "$name" "$c" "$r" "${line#RESULT }")"
        done
    done
    if ((c == MAXCONN)); then
        for name in "${TARGETS[@]}"; do
            [[ -z ${FLAG[$name]:-} ]] || continue
            RSS_PEAK[$name]=$(mem_kib VmHWM "${PID[$name]}")
        done
    fi
done
if ((FRESH)); then
    FLOOR_AFTER=$(rsa_floor_us || true)
    log "RSA floor after the load: ${FLOOR_AFTER:-not measured} µs"
fi
FLOOR_US=$(awk -v a="$FLOOR_BEFORE" -v b="$FLOOR_AFTER" 'BEGIN { if (a != "" && b != "") printf "%.2f", (a + b) / 2; else if (a != "") print a; else if (b != "") print b }')
LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)
read -r TICKS_END STEAL_END < <(machine_ticks)
STEAL_PCT=$(awk -v t=$((TICKS_END - TICKS_START)) -v s=$((STEAL_END - STEAL_START)) 'BEGIN {printf "%.1f", (t > 0 ? 100 * s / t : 0)}')
((KEEP)) && cp "$RAW" "$TMP/results.keep.tsv"

# ---------------------------------------------------------------- report
# Medians over rounds per (target, conns): name conns rps p50 p99 p999 errors spread%
AGG=$TMP/agg.tsv
awk -F'\t' '
function med(s,   a, n, i, j, t) {
    n = split(s, a, " ")
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    k = $1 "\t" $2
    if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
    cpu[k] = cpu[k] " " $12; kern[k] = kern[k] " " $15; wake[k] = wake[k] " " $16; poll[k] = poll[k] " " $14; load[k] = load[k] " " $13; rps[k] = rps[k] " " $4; p50[k] = p50[k] " " $5; p99[k] = p99[k] " " $6; p999[k] = p999[k] " " $7
    err[k] += $10 + $11; req[k] += $9
    if (!(k in lo) || $4 < lo[k]) lo[k] = $4
    if (!(k in hi) || $4 > hi[k]) hi[k] = $4
}
END {
    for (i = 1; i <= nk; i++) {
        k = order[i]; m = med(rps[k])
        printf "%s\t%.1f\t%d\t%d\t%d\t%d\t%d\t%.1f\t%.2f\t%.0f\t%.2f\t%.2f\t%.3f\n", k, m, med(p50[k]), med(p99[k]), med(p999[k]), err[k], req[k], (m > 0 ? 100 * (hi[k] - lo[k]) / m : 0), med(cpu[k]), med(load[k]), med(poll[k]), med(kern[k]), med(wake[k])
    }
}' "$RAW" >"$AGG"

halt_poll_text() {
    local v
    v=$(cat "$HALT_POLL_FILE" 2>/dev/null || true)
    if [[ -z $v ]]; then echo "not available"
    elif [[ -n $HALT_POLL ]]; then echo "$v ns for this run (--halt-poll; the machine's own: $HALT_POLL_OLD)"
    else echo "$v ns"; fi
}
get() { # name conns column(3=rps 4=p50 5=p99 6=p999 7=errors 8=requests 9=spread 10=cpu µs/req 11=load CPU busy % 12=idle poll µs/req 13=kernel µs/req 14=load CPU wake-up interrupts/req)
    awk -F'\t' -v n="$1" -v c="$2" -v col="$3" '$1 == n && $2 == c { print $col; exit }' "$AGG"
}
fmt_us() { awk -v u="$1" 'BEGIN { if (u == "") print "-"; else if (u < 1000) printf "%d µs", u; else if (u < 100000) printf "%.2f ms", u / 1000; else printf "%.0f ms", u / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%+.1f%%", 100 * (a - b) / b }'; }
mib() { awk -v k="$1" 'BEGIN { if (k == "" || k == 0) print "-"; else printf "%.1f MiB", k / 1024 }'; }

COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null) || COMMIT+=" (+ uncommitted changes)"
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
REPORT=$TMP/report.md
EXIT=0
{
    echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC'), $( ((QUICK)) && echo "quick mode" || echo "full mode"): ${DURATION} s per point after ${WARMUP} s warm-up, $ROUNDS round(s) (figures are medians over rounds), targets interleaved."
    echo
    echo "- machine: $NPROC CPUs, ${CPU_MODEL:-unknown CPU}, Linux $(uname -r); load average at start $LOADAVG_START, at end $LOADAVG_END; CPU steal (time the hypervisor gave to other guests) ${STEAL_PCT}% over the run; guest idle polling (haltpoll guest_halt_poll_ns) $(halt_poll_text)"
    echo "- versions: factory-sidecar $COMMIT ($(cd "$ROOT" && rustc --version 2>/dev/null | cut -d' ' -f1-2)), ${DESC[nginx]%%,*}, ${DESC[haproxy]%%,*}, $(wrk -v 2>&1 | awk 'NR==1{print $1, $2}')"
    if ((PIN)); then
        echo "- pinning: proxy under test on CPU $PROXY_CPU with one worker (nginx worker_processes 1, haproxy nbthread 1, sidecar TOKIO_WORKER_THREADS=1); wrk (1 thread), the simulator (1 worker) and the OTLP collector on CPU $LOAD_CPU"
    else
        echo "- pinning: off (--no-pin); wrk 2 threads at 2+ connections, one worker per proxy"
    fi
    [[ -z $NICE ]] || echo "- priority: every benchmarked process and wrk under nice -n $NICE"
    echo "- load: wrk, keep-alive, POST /api/order with the simulator's SAMPLE_ORDER body (${#BENCH_BODY} bytes) and the test apiKey; upstream pool for every proxy: $POOL idle keep-alive connections"
    echo "- features wired into this sidecar binary (the parts its /status reports, and OTLP from its log): $STATUS_PARTS; a variant that turns off a feature not listed here measures no difference by construction"
    [[ -z $OTLP_SKIP ]] || echo "- **OTLP: $OTLP_SKIP. The OTLP variant is skipped; 'sidecar' runs without export.**"
    echo
    echo "| target | conns | req/s | p50 | p99 | p99.9 | errors | CPU µs/req | of which kernel | idle poll µs/req | load CPU busy | load CPU wake-ups/req | req/s ÷ direct | p99 ÷ direct | req/s ÷ nginx | p99 ÷ nginx | req/s ÷ haproxy | p99 ÷ haproxy |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for name in "${TARGETS[@]}"; do
        for c in $CONNS; do
            rps=$(get "$name" "$c" 3)
            if [[ -z $rps ]]; then
                echo "| $name | $c | **${FLAG[$name]:-not measured}** | | | | | | | | | | | | | | | |"
                continue
            fi
            p99=$(get "$name" "$c" 5)
            errs=$(get "$name" "$c" 7)
            e=$errs
            if ((errs > 0)); then
                e="**$errs of $(get "$name" "$c" 8)**"
                FLAG[$name]=${FLAG[$name]:-"errors under load"}
            fi
            vs_n="" vs_h="" vs_np="" vs_hp="" vs_d="" vs_dp=""
            if [[ $name != direct ]]; then
                vs_d=$(ratio "$rps" "$(get direct "$c" 3)") vs_dp=$(ratio "$p99" "$(get direct "$c" 5)")
            fi
            if [[ $name == sidecar-fresh ]]; then
                # Beside the nginx that meets the same fresh tokens.
                vs_n=$(ratio "$rps" "$(get nginx-fresh "$c" 3)") vs_np=$(ratio "$p99" "$(get nginx-fresh "$c" 5)")
            elif [[ $name == sidecar || $name == sc-* ]]; then
                vs_n=$(ratio "$rps" "$(get nginx "$c" 3)") vs_np=$(ratio "$p99" "$(get nginx "$c" 5)")
                vs_h=$(ratio "$rps" "$(get haproxy "$c" 3)") vs_hp=$(ratio "$p99" "$(get haproxy "$c" 5)")
            fi
            load_busy="$(get "$name" "$c" 11)%"
            ((PIN)) || load_busy="-"
            poll=$(get "$name" "$c" 12)
            [[ -n ${ADMIN[$name]:-} ]] || poll="-"
            kern=$(get "$name" "$c" 13)
            [[ $kern != -* ]] || kern="-"
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$c" \
                "$(printf '%.0f' "$rps")" "$(fmt_us "$(get "$name" "$c" 4)")" "$(fmt_us "$p99")" \
                "$(fmt_us "$(get "$name" "$c" 6)")" "$e" "$(get "$name" "$c" 10)" "$kern" "$poll" "$load_busy" "$(get "$name" "$c" 14)" "$vs_d" "$vs_dp" "$vs_n" "$vs_np" "$vs_h" "$vs_hp"
        done
    done
    echo
    if ((FRESH)); then
        echo "For sidecar-fresh, the nginx ratios are against nginx-fresh (the same fresh tokens)."
        echo
    fi
    echo "Errors = HTTP statuses >= 400 plus socket errors (connect, read, write, timeout > 5 s), summed over rounds. CPU µs/req = user + system CPU time of the target's processes (/proc/PID/stat; for direct, the simulator) over the requests served, less the sidecar's idle polling: the proxy's own cost, much less sensitive to other work on the machine than req/s. Of which kernel = the system part of that time (the polling taken from it): the TCP stack, which on loopback also does the receiving side's work for each segment the proxy sends, so it is about the same for every proxy that sends the four segments an order needs. Idle poll µs/req = CPU time a sidecar spent polling for events with none to handle (server.busy_poll, read from its sidecar_busy_poll_idle_seconds_total), per request: CPU that bought latency, not work. Load CPU busy = how busy CPU $LOAD_CPU (wrk, the simulator, the collector, and whatever else the machine runs there) was during the point: near 100 %, the load side rather than the proxy set the pace, and a cheaper proxy cannot show more req/s. Load CPU wake-ups/req = rescheduling and function-call interrupts CPU $LOAD_CPU received per request (/proc/interrupts RES + CAL): a task there woken from the other CPU; on a VM each is an exit to the hypervisor, paid by the CPU that sends it, mostly the proxy's. Ratios: req/s above 1 and p99 below 1 favour the proxy in the row."
    if ((ROUNDS > 1)); then
        echo "Round-to-round req/s spread (max - min over median), the noise floor for the comparisons below: $(awk -F'\t' '{ if ($9 > m) m = $9; s += $9; n++ } END { if (n) printf "mean %.1f%%, worst %.1f%%", s / n, m }' "$AGG")."
    fi
    echo
    echo "| target | what | RSS idle | RSS peak (VmHWM, through the $MAXCONN-connection run) | start-up to ready (median) | SIGTERM to exit, idle (median) |"
    echo "|---|---|---:|---:|---|---|"
    for name in "${TARGETS[@]}"; do
        [[ $name == direct ]] && continue
        st=${STARTUP[$name]:-}
        case $name in sidecar) st="$st, spawn to /readyz 200" ;; nginx | haproxy) st="$st, spawn to first HTTP answer" ;; esac
        echo "| $name | ${DESC[$name]} | $(mib "${RSS_IDLE[$name]:-}") | $(mib "${RSS_PEAK[$name]:-}") | $st | ${STOPTIME[$name]:-} |"
    done
    echo
    echo "RSS: VmRSS / VmHWM from /proc/PID/status, summed over the master and its worker for nginx (shared pages counted twice); haproxy and the sidecar are one process each."
    echo
    if ((FRESH)); then
        echo "Fresh tokens (every order carries another JWT, as the real factory sends them; the sidecar checks each with one RSA-2048 verification). RSA floor: \`openssl speed -seconds 2 rsa2048\` verify on CPU $PROXY_CPU, pinned like the proxies: ${FLOOR_BEFORE:-?} µs before the load, ${FLOOR_AFTER:-?} µs after, mean ${FLOOR_US:-?} µs. Extra CPU = the sidecar's CPU µs per order with fresh tokens minus with one token."
        echo
        echo "| conns | nginx req/s one / fresh | sidecar req/s one / fresh | sidecar ÷ nginx one / fresh | p50 sidecar-fresh / nginx-fresh | p99 sidecar-fresh / nginx-fresh | CPU µs/order sidecar one / fresh | extra CPU µs | RSA floor µs | extra ÷ floor |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for c in $CONNS; do
            n1=$(get nginx "$c" 3) nf=$(get nginx-fresh "$c" 3) s1=$(get sidecar "$c" 3) sf=$(get sidecar-fresh "$c" 3)
            c1=$(get sidecar "$c" 10) cf=$(get sidecar-fresh "$c" 10)
            extra=$(awk -v a="$cf" -v b="$c1" 'BEGIN { if (a == "" || b == "") print ""; else printf "%.2f", a - b }')
            printf '| %s | %s / %s | %s / %s | %s / %s | %s / %s | %s / %s | %s / %s | %s | %s | %s |\n' "$c" \
                "$(printf '%.0f' "${n1:-0}")" "$(printf '%.0f' "${nf:-0}")" "$(printf '%.0f' "${s1:-0}")" "$(printf '%.0f' "${sf:-0}")" \
                "$(ratio "$s1" "$n1")" "$(ratio "$sf" "$nf")" \
                "$(fmt_us "$(get sidecar-fresh "$c" 4)")" "$(fmt_us "$(get nginx-fresh "$c" 4)")" \
                "$(fmt_us "$(get sidecar-fresh "$c" 5)")" "$(fmt_us "$(get nginx-fresh "$c" 5)")" \
                "${c1:--}" "${cf:--}" "${extra:--}" "${FLOOR_US:--}" "$(ratio "$extra" "$FLOOR_US")"
        done
        echo
    fi
    echo "Feature overhead (on vs off; target: throughput of 'on' no more than the limit below 'off'):"
    echo
    echo "| comparison | conns | req/s on | req/s off | req/s change | CPU/req change | p99 on | p99 off | p99 change | limit | verdict |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    compare() { # label on off limit%
        local label=$1 on=$2 off=$3 lim=$4 c a b pa pb d verdict
        for c in $CONNS; do
            a=$(get "$on" "$c" 3) b=$(get "$off" "$c" 3)
            if [[ -z $a || -z $b ]]; then echo "| $label | $c | | | | | | | | $lim% | not measured |"; continue; fi
            pa=$(get "$on" "$c" 5) pb=$(get "$off" "$c" 5)
            d=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", 100 * (a - b) / b }')
            verdict=$(awk -v d="$d" -v l="$lim" 'BEGIN { print (d >= -l) ? "ok" : "**MISSED**" }')
            echo "| $label | $c | $(printf '%.0f' "$a") | $(printf '%.0f' "$b") | $(pct "$a" "$b") | $(pct "$(get "$on" "$c" 10)" "$(get "$off" "$c" 10)") | $(fmt_us "$pa") | $(fmt_us "$pb") | $(pct "$pa" "$pb") | $lim% | $verdict |"
        done
    }
    compare "retry+breaker: sidecar vs sc-noretry" sidecar sc-noretry 5
    compare "chaos: sidecar vs sc-nochaos" sidecar sc-nochaos 5
    if [[ -z $OTLP_SKIP ]]; then
        compare "OTLP export: sidecar vs sc-nootlp" sidecar sc-nootlp 3
    else
        echo "| OTLP export | | | | | | | | | 3% | skipped: no collector |"
    fi
    compare "all features: sidecar vs sc-bare" sidecar sc-bare 5
    ((PGO)) && compare "profile-guided build: sidecar vs sc-nopgo" sidecar sc-nopgo 0
    echo
    echo "Targets, for the sidecar with every feature on:"
    echo
    check() { # label pass(0/1) detail
        local mark="met"
        (($2)) || mark="**MISSED**"
        echo "- $1: $mark ($3)"
    }
    for c in $CONNS; do
        s=$(get sidecar "$c" 3) n=$(get nginx "$c" 3) h=$(get haproxy "$c" 3)
        sp=$(get sidecar "$c" 5) np=$(get nginx "$c" 5)
        [[ -n $s && -n $n && -n $h ]] || { echo "- $c connections: not measured"; continue; }
        check "throughput >= nginx at $c conns" "$(awk -v a="$s" -v b="$n" 'BEGIN { print (a >= b) }')" "$(printf '%.0f vs %.0f req/s, %s' "$s" "$n" "$(pct "$s" "$n")")"
        check "throughput >= haproxy at $c conns" "$(awk -v a="$s" -v b="$h" 'BEGIN { print (a >= b) }')" "$(printf '%.0f vs %.0f req/s, %s' "$s" "$h" "$(pct "$s" "$h")")"
        check "p99 <= nginx at $c conns" "$(awk -v a="$sp" -v b="$np" 'BEGIN { print (a <= b) }')" "$(fmt_us "$sp") vs $(fmt_us "$np")"
    done
    if ((FRESH)); then
        for c in $CONNS; do
            sf=$(get sidecar-fresh "$c" 3) nf=$(get nginx-fresh "$c" 3)
            [[ -n $sf && -n $nf ]] || { echo "- fresh tokens, $c connections: not measured"; continue; }
            check "fresh tokens: throughput >= 0.6 x nginx at $c conns" "$(awk -v a="$sf" -v b="$nf" 'BEGIN { print (a >= 0.6 * b) }')" \
                "$(printf '%.0f vs %.0f req/s, %s x' "$sf" "$nf" "$(ratio "$sf" "$nf")")"
            extra=$(awk -v a="$(get sidecar-fresh "$c" 10)" -v b="$(get sidecar "$c" 10)" 'BEGIN { printf "%.2f", a - b }')
            if [[ -n $FLOOR_US ]]; then
                check "fresh tokens: extra CPU per order <= 1.25 x the RSA floor at $c conns" "$(awk -v e="$extra" -v f="$FLOOR_US" 'BEGIN { print (e <= 1.25 * f) }')" \
                    "$extra µs vs floor $FLOOR_US µs, $(ratio "$extra" "$FLOOR_US") x"
            else
                echo "- fresh tokens: extra CPU per order at $c conns: $extra µs (RSA floor not measured: openssl speed failed)"
            fi
            # What 0.6 x nginx-fresh leaves for the rest of an order, once the
            # kernel's share (as measured with one token) and the RSA floor
            # are paid: set against the user-space CPU of both proxies.
            if [[ -n $FLOOR_US && $(get sidecar "$c" 13) != -* && $(get sidecar-fresh "$c" 13) != -* && $(get nginx "$c" 10) != "" ]]; then
                awk -v nf="$nf" -v f="$FLOOR_US" -v c="$c" -v k="$(get sidecar "$c" 13)" -v kf="$(get sidecar-fresh "$c" 13)" \
                    -v s="$(get sidecar "$c" 10)" -v n="$(get nginx "$c" 10)" -v nk="$(get nginx "$c" 13)" 'BEGIN {
                    b = 1e6 / (0.6 * nf)
                    printf "- fresh tokens at %s conns, the budget: 0.6 x nginx-fresh is %.1f µs of CPU per order; the kernel part of a sidecar order (%.1f µs with one token, %.1f µs with fresh tokens) and the RSA floor (%.1f µs) leave %.1f to %.1f µs for user space, where an order with one token takes the sidecar %.1f µs and nginx %.1f µs\n", c, b, k, kf, f, b - kf - f, b - k - f, s - k, n - nk
                }'
            fi
        done
    fi
    ri=${RSS_IDLE[sidecar]:-0} rp=${RSS_PEAK[sidecar]:-0}
    check "idle RSS <= 10 MiB" "$(( ri > 0 && ri <= 10240 ))" "$(mib "$ri")"
    check "RSS at $MAXCONN connections <= 30 MiB" "$(( rp > 0 && rp <= 30720 ))" "$(mib "$rp")"
    if ((FRESH)); then
        rp=${RSS_PEAK[sidecar-fresh]:-0}
        check "fresh tokens: RSS at $MAXCONN connections <= 30 MiB" "$(( rp > 0 && rp <= 30720 ))" "$(mib "$rp")"
    fi
    flagged=0
    for name in "${TARGETS[@]}"; do
        if [[ -n ${FLAG[$name]:-} ]]; then
            ((flagged == 0)) && echo && echo "Flagged targets (their figures are not trustworthy):" && echo
            flagged=1
            echo "- **$name: ${FLAG[$name]}**"
        fi
    done
} >"$REPORT"
for name in "${TARGETS[@]}"; do [[ -z ${FLAG[$name]:-} ]] || EXIT=3; done

echo
cat "$REPORT"

if ((WRITE)); then
    BEGIN_MARK='<!-- results:begin (written by benches/load.sh; edits inside are overwritten) -->'
    END_MARK='<!-- results:end -->'
    [[ -f $README ]] || printf '# Load benchmark\n' >"$README"
    if ! grep -qF "$BEGIN_MARK" "$README"; then
        printf '\n## Results\n\n%s\n%s\n' "$BEGIN_MARK" "$END_MARK" >>"$README"
    fi
    awk -v b="$BEGIN_MARK" -v e="$END_MARK" -v f="$REPORT" '
        $0 == b { print; while ((getline l < f) > 0) print l; skip = 1; next }
        $0 == e { skip = 0 }
        !skip { print }
    ' "$README" >"$TMP/README.new"
    cp "$TMP/README.new" "$README"
    log "results written to benches/README.md"
fi
exit "$EXIT"
