#!/usr/bin/env bash
# Profile-guided release build of factory-sidecar: an instrumented build, a
# short training run of the sidecar (every feature on) in front of the
# simulator, then the release build optimised with that profile. The same
# source and Cargo profile as `cargo build --release`; only code layout,
# inlining and branch order change. On the load benchmark's machine it cuts
# the user-space instructions per order by about 13 % and the instruction-cache
# misses by half (the hot path spans the HTTP/1.1 server and client, the tower
# layers and the runtime; see benches/README.md). Optional: the plain build
# is what the Dockerfile ships and what the results are reported for.
#
#   bash benches/pgo.sh            -> $CARGO_TARGET_DIR/pgo/release/factory-sidecar
#   bash benches/pgo.sh --print    only print where the binary goes
#
# Needs the rustup component llvm-tools (installed when missing) and wrk
# (apt-get install wrk). Loopback only; about twice a release build plus 20 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$BASE/pgo/release/factory-sidecar
[[ ${1:-} == --print ]] && { echo "$OUT"; exit 0; }
[[ $# -eq 0 ]] || { echo "usage: benches/pgo.sh [--print]" >&2; exit 1; }
log() { printf '[pgo %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

PROFDATA=$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-profdata
if [[ ! -x $PROFDATA ]]; then
    log "rustup component add llvm-tools"
    rustup component add llvm-tools >/dev/null
fi
command -v wrk >/dev/null || { echo "pgo.sh: wrk is needed (apt-get install wrk)" >&2; exit 1; }

DATA=$BASE/pgo/profraw
rm -rf "$DATA"
mkdir -p "$DATA"
log "instrumented build"
(cd "$ROOT" && RUSTFLAGS="-Cprofile-generate=$DATA" CARGO_TARGET_DIR=$BASE/pgo-gen cargo build --release --quiet)
GEN=$BASE/pgo-gen/release/factory-sidecar

TMP=$(mktemp -d "${TMPDIR:-/tmp}/factory-pgo.XXXXXX")
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
bench_constants "$ROOT" || exit 1
order() { curl -s -o /dev/null -m 5 -H "authorization: Bearer $BENCH_KEY" -H 'content-type: application/json' --data-raw "$BENCH_BODY" "http://$LISTEN/api/order"; }
load() { wrk -t1 -c"$1" -d"$2"s -s "$ROOT/benches/configs/load.lua" "http://$LISTEN/api/order" >/dev/null; } # conns seconds

# The simulator is the instrumented binary too; its profile only shapes its own code.
start_sim "$TMP/sim.out" "$GEN" --throttle-delay 50ms || exit 1
SIM=$SIM_PID
PIDS+=("$SIM")
LISTEN=127.0.0.1:$(free_port)
cat >"$TMP/sidecar.toml" <<EOF
[server]
listen = "$LISTEN"
[upstream]
url = "http://$UP"
pool_max_idle_per_host = 256
[admin]
listen = "127.0.0.1:$(free_port)"
[telemetry]
otlp_endpoint = ""
EOF
env TOKIO_WORKER_THREADS=1 RUST_LOG=warn "$GEN" run --config "$TMP/sidecar.toml" >"$TMP/sidecar.out" 2>&1 &
SC=$!
PIDS+=($SC)
for _ in $(seq 200); do order && break; sleep 0.05; done
log "training: orders at 32 and 256 connections, then each chaos type"
load 32 4
load 256 4
for chaos in fail badjwt throttle; do
    curl -s -o /dev/null -X PUT -d "{\"type\":\"$chaos\"}" "http://$UP/sim/chaos"
    for _ in $(seq 20); do order || true; done
    curl -s -o /dev/null -X PUT -d '{"type":"none"}' "http://$UP/sim/chaos"
done
load 32 2
# A clean exit writes the profile.
kill -INT "$SC" "$SIM"
wait "$SC" "$SIM" 2>/dev/null || true
ls "$DATA"/*.profraw >/dev/null 2>&1 || { echo "pgo.sh: the training run wrote no profile" >&2; exit 1; }
"$PROFDATA" merge -o "$BASE/pgo/merged.profdata" "$DATA"/*.profraw
# Cargo fingerprints RUSTFLAGS, not the profile's contents: a path named by
# the profile's hash makes a new profile rebuild every crate, not only ours.
PROFILE=$BASE/pgo/merged-$(sha256sum "$BASE/pgo/merged.profdata" | cut -c1-16).profdata
rm -f "$BASE"/pgo/merged-*.profdata
mv "$BASE/pgo/merged.profdata" "$PROFILE"

log "optimised build"
(cd "$ROOT" && RUSTFLAGS="-Cprofile-use=$PROFILE -Cllvm-args=-pgo-warn-missing-function=false" \
    CARGO_TARGET_DIR=$BASE/pgo cargo build --release --quiet)
log "done: $OUT"
