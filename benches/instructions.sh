#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind (with
# idle polling off, `server.busy_poll = "0s"`, whose rounds would count with
# the wall-clock time valgrind stretches rather than with the orders): the
# user-space cost of one order through a proxy, repeatable to a fraction of a
# percent whatever else the machine is doing (wall-clock figures on a shared
# VM move by 10% or more between rounds; see benches/README.md). Counts
# instructions only: no kernel time, no cache misses, no waiting.
#
# Two runs per target (N1 and N2 requests, ab keep-alive, C connections); the
# difference over N2 - N1 cancels start-up, warm-up and shutdown. Targets:
# the sidecar in the load benchmark's variants without OTLP export (its
# access log on, as by default, written to a file like nginx's would be;
# `sc-noaccess` is `sidecar` with `[log] access_log = false`), `sc-otlp`
# (every feature and OTLP export every 1 s to a local rotel-agent: against
# `sidecar`, an upper bound of the export's cost, since a run under valgrind
# lasts longer and so holds more exports than at full speed), and nginx in
# the same configuration as benches/load.sh (one process, master_process off).
# A target named NAME-fresh (sidecar-fresh, nginx-fresh, ...) is NAME in front
# of a second simulator started with `--token-pool 256`: every order carries
# another pizza JWT, as with the real factory, so the sidecar pays one RSA
# verification per order; the others see one token again and again, which
# its memory of recent tokens checks for free.
# `sc-queue` is `sidecar` with an async-order queue configured (embedded
# store) and orders without `Prefer: respond-async`: the happy path's cost
# of the queue layer.
#
#   bash benches/instructions.sh                     all targets, c=32
#   bash benches/instructions.sh --targets "sidecar sidecar-fresh"   one token vs fresh tokens
#   bash benches/instructions.sh --targets "sidecar nginx" --conns 256
#   bash benches/instructions.sh --bin path/to/factory-sidecar   (compare builds)
#   bash benches/instructions.sh --keep DIR   keeps the callgrind files for
#       callgrind_annotate --inclusive=yes DIR/cg.sidecar.5000*  (where it goes)
#   bash benches/instructions.sh --cache --conns 256 --targets "sidecar nginx haproxy"
#       cachegrind instead: instructions plus simulated cache misses per
#       request (32 KiB L1i and L1d, 512 KiB last level)
#
# Needs valgrind and ab (apt-get install valgrind apache2-utils); installs them
# when missing. Loopback only; about a minute per target.
set -euo pipefail

TARGETS="sidecar sidecar-fresh sc-otlp sc-noretry sc-nochaos sc-bare nginx"
CONNS=32 N1=1000 N2=5000 BIN="" INSTALL=1 KEEP="" CACHE=0
while (($#)); do
    case "$1" in
    --targets) TARGETS=${2:?}; shift ;;
    --conns) CONNS=${2:?}; shift ;;
    --n1) N1=${2:?}; shift ;;
    --n2) N2=${2:?}; shift ;;
    --bin) BIN=${2:?}; shift ;;
    --no-install) INSTALL=0 ;;
    --keep) KEEP=${2:?}; shift ;;
    --cache) CACHE=1 ;;
    -h | --help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "instructions.sh: unknown option '$1'" >&2; exit 1 ;;
    esac
    shift
done
((N2 > N1)) || { echo "instructions.sh: --n2 must exceed --n1" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v ab >/dev/null || need+=(apache2-utils)
[[ $TARGETS != *nginx* ]] || command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
[[ $TARGETS != *haproxy* ]] || command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy)
if ((${#need[@]})); then
    ((INSTALL)) || { echo "missing: ${need[*]}" >&2; exit 1; }
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
# callgrind counts instructions; cachegrind adds simulated cache misses.
if ((CACHE)); then
    TOOL=(valgrind --tool=cachegrind --cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL=524288,8,64)
    OUTFLAG=--cachegrind-out-file
else
    TOOL=(valgrind --tool=callgrind)
    OUTFLAG=--callgrind-out-file
fi
if [[ -z $BIN ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/factory-sidecar
fi
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
bench_constants "$ROOT" || exit 1

TMP=$(mktemp -d "${TMPDIR:-/tmp}/factory-instr.XXXXXX")
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT
printf '%s' "$BENCH_BODY" >"$TMP/body.json"

start_sim "$TMP/sim.out" "$BIN" || exit 1
PIDS+=("$SIM_PID")
UP_ONE=$UP UP_FRESH=""
if [[ " $TARGETS " == *-fresh\ * ]]; then
    start_sim "$TMP/sim-fresh.out" "$BIN" --token-pool 256 || exit 1
    PIDS+=("$SIM_PID")
    UP_FRESH=$UP
fi

OTLP=""
if [[ $TARGETS == *sc-otlp* ]]; then
    ROTEL=$(find_rotel || true)
    if [[ -z $ROTEL ]]; then
        ((INSTALL)) || { echo "missing: rotel-agent (pip install --pre rotel)" >&2; exit 1; }
        pip install --quiet --pre 'rotel==0.0.1a15' >/dev/null
        ROTEL=$(find_rotel) || { echo "rotel-agent not found after pip install" >&2; exit 1; }
    fi
    otlp_port=$(free_port)
    "$ROTEL" start --otlp-http-endpoint "127.0.0.1:$otlp_port" --otlp-grpc-endpoint "127.0.0.1:$(free_port)" \
        --exporter blackhole >"$TMP/rotel.out" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 200); do
        curl -s -o /dev/null -m 1 "http://127.0.0.1:$otlp_port/" && break
        sleep 0.05
    done
    OTLP="http://127.0.0.1:$otlp_port"
fi

# One measured run of N requests; prints the instruction total.
run_once() { # target n
    local target=$1 n=$2 listen admin pid out=$TMP/cg.$1.$2 UP=$UP_ONE
    listen=127.0.0.1:$(free_port)
    if [[ $target == *-fresh ]]; then target=${target%-fresh} UP=$UP_FRESH; fi
    case $target in
    nginx)
        mkdir -p "$TMP/nginx-tmp"
        sed -e "s|@TMP@|$TMP|g" -e "s|@UPSTREAM@|$UP|g" -e "s|@POOL@|256|g" -e "s|@LISTEN@|$listen|g" \
            "$ROOT/benches/configs/nginx.conf.in" | sed 's/^daemon off;/daemon off;\nmaster_process off;/' >"$TMP/nginx.conf"
        "${TOOL[@]}" "$OUTFLAG=$out" "$NGINX" -p "$TMP" -e "$TMP/nginx-error.log" \
            -c "$TMP/nginx.conf" >"$TMP/v.log" 2>&1 &
        ;;
    haproxy)
        sed -e "s|@TMP@|$TMP|g" -e "s|@UPSTREAM@|$UP|g" -e "s|@POOL@|256|g" -e "s|@LISTEN@|$listen|g" \
            "$ROOT/benches/configs/haproxy.cfg.in" >"$TMP/haproxy.cfg"
        "${TOOL[@]}" "$OUTFLAG=$out" "$HAPROXY" -db -f "$TMP/haproxy.cfg" >"$TMP/v.log" 2>&1 &
        ;;
    *)
        local attempts=3 breaker=true chaos=true otlp="" log="" queue=""
        case $target in
        sidecar) ;;
        sc-noaccess) log=$'[log]\naccess_log = false' ;;
        sc-queue) queue="dir = \"$TMP/queue-$n\"" ;;
        sc-otlp) otlp=$OTLP ;;
        sc-noretry) attempts=1 breaker=false ;;
        sc-nochaos) chaos=false ;;
        sc-bare) attempts=1 breaker=false chaos=false ;;
        *) echo "unknown target $target" >&2; exit 1 ;;
        esac
        admin=127.0.0.1:$(free_port)
        cat >"$TMP/$target.toml" <<EOF
[server]
listen = "$listen"
busy_poll = "0s"
[upstream]
url = "http://$UP"
pool_max_idle_per_host = 256
[retry]
max_attempts = $attempts
[circuit_breaker]
enabled = $breaker
[chaos]
detect = $chaos
verify_jwt = $chaos
redact_in_responses = $chaos
[admin]
listen = "$admin"
[telemetry]
otlp_endpoint = "$otlp"
export_interval = "1s"
$log
EOF
        # Only for sc-queue: a build without the queue refuses the section.
        [[ -z $queue ]] || printf '[queue]\n%s\n' "$queue" >>"$TMP/$target.toml"
        env TOKIO_WORKER_THREADS=1 "${TOOL[@]}" "$OUTFLAG=$out" \
            "$BIN" run --config "$TMP/$target.toml" >"$TMP/v.log" 2>&1 &
        ;;
    esac
    pid=$!
    for _ in $(seq 600); do
        curl -s -o /dev/null -m 1 -H "authorization: Bearer $BENCH_KEY" -H 'content-type: application/json' \
            --data-raw "$BENCH_BODY" "http://$listen/api/order" && break
        kill -0 "$pid" 2>/dev/null || { cat "$TMP/v.log" >&2; exit 1; }
        sleep 0.1
    done
    ab -q -k -c "$CONNS" -n "$n" -p "$TMP/body.json" -T application/json \
        -H "Authorization: Bearer $BENCH_KEY" "http://$listen/api/order" >"$TMP/ab.log" 2>&1
    local failed non2xx
    failed=$(awk '/^Failed requests:/ {print $3}' "$TMP/ab.log")
    non2xx=$(awk '/^Non-2xx responses:/ {print $3}' "$TMP/ab.log")
    # haproxy ignores SIGINT when started in the background; the rest stop on it.
    if [[ $target == haproxy ]]; then kill -TERM "$pid"; else kill -INT "$pid"; fi
    wait "$pid" 2>/dev/null || true
    if [[ ${failed:-0} != 0 || -n ${non2xx:-} ]]; then
        echo "$target: $failed failed, ${non2xx:-0} non-2xx answers" >&2
        exit 3
    fi
    if [[ $target == sc-otlp ]] && grep -q "export failed" "$TMP/v.log"; then
        echo "sc-otlp: the OTLP export failed: $(grep -m1 "export failed" "$TMP/v.log")" >&2
        exit 3
    fi
    [[ -z $KEEP ]] || { mkdir -p "$KEEP" && cp "$out"* "$KEEP"/; }
    # Instructions (callgrind), or the nine cachegrind counts.
    awk '/^summary:/ {for (i = 2; i <= NF; i++) s[i] += $i; n = NF}
         END {for (i = 2; i <= n; i++) printf "%d ", s[i]; print ""}' "$out"*
}

if ((CACHE)); then
    printf '%-14s %6s %8s %7s %7s %7s %7s\n' target conns instr I1miss D1miss LLmiss '(per request)'
else
    printf '%-14s %6s %14s\n' target conns instr/request
fi
for t in $TARGETS; do
    read -r -a a < <(run_once "$t" "$N1")
    read -r -a b < <(run_once "$t" "$N2")
    per() { echo $(((b[$1] - a[$1]) / (N2 - N1))); }
    if ((CACHE)); then
        # Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw
        printf '%-14s %6s %8d %7d %7d %7d\n' "$t" "$CONNS" "$(per 0)" "$(per 1)" \
            $(($(per 4) + $(per 7))) $(($(per 2) + $(per 5) + $(per 8)))
    else
        printf '%-14s %6s %14d\n' "$t" "$CONNS" "$(per 0)"
    fi
done
