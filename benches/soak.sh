#!/usr/bin/env bash
# Soak: a bounded run of steady orders through a release factory-sidecar while
# the simulated factory cycles through every chaos type. Checks that RSS and
# open fds stay flat after warm-up (growth < 5%) and that no order fails under
# fail or badjwt chaos (every pizza JWT is verified by the factory).
# Not part of CI. Loopback only.
#
#   bash benches/soak.sh [--duration SECONDS] [--rate ORDERS_PER_S] [--phase SECONDS]
#                        [--bin PATH]   (default: builds target/release/factory-sidecar)
#                        [--fresh-tokens]  every order carries another pizza JWT, as
#                                          with the real factory (sim --token-pool 256),
#                                          so the sidecar verifies each one
set -euo pipefail
cd "$(dirname "$0")/.."

duration=300 rate=40 phase=20 bin="" fresh=()
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --phase) phase=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --fresh-tokens) fresh=(--fresh-tokens); shift ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=target/release/factory-sidecar
fi
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

wait_for() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "timed out waiting for $what" >&2; exit 2
}

sim_args=()
((${#fresh[@]} == 0)) || sim_args=(--token-pool 256)
"$bin" sim --listen 127.0.0.1:0 "${sim_args[@]}" >"$tmp/sim.out" 2>"$tmp/sim.err" &
pids+=($!)
wait_for "the simulator" grep -q "sim listening on" "$tmp/sim.out"
sim_url=$(grep -o 'http://[0-9.:]*' "$tmp/sim.out" | head -1)

# shellcheck source=benches/common.sh
source benches/common.sh # free_port
proxy_port=$(free_port) admin_port=$(free_port)
sed -e "s|@UPSTREAM@|$sim_url|" -e "s|@LISTEN@|127.0.0.1:$proxy_port|" -e "s|@ADMIN@|127.0.0.1:$admin_port|" \
  benches/configs/soak.toml.in >"$tmp/soak.toml"
"$bin" check --config "$tmp/soak.toml" >/dev/null
"$bin" run --config "$tmp/soak.toml" 2>"$tmp/sidecar.log" &
sidecar_pid=$!
pids+=($sidecar_pid)
wait_for "the sidecar" curl -fsS "http://127.0.0.1:$admin_port/readyz"

echo "soak: ${duration}s, $rate orders/s, ${phase}s per chaos phase, $( ((${#fresh[@]})) && echo "fresh tokens (sim --token-pool 256)" || echo "one token per second (the simulator's cache)"); sidecar pid $sidecar_pid ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
python3 benches/soak.py --sidecar "http://127.0.0.1:$proxy_port" --sim "$sim_url" --pid "$sidecar_pid" \
  --api-key feedfacecafebeef0123456789abcdef --duration "$duration" --rate "$rate" --phase "$phase" "${fresh[@]}"
