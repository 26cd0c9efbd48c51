#!/usr/bin/env bash
# Prometheus' own checks of what operators load and scrape:
#   1. `promtool check rules` on the shipped rule file, as shipped and with
#      ${RUNBOOK_URL} substituted the way the file says to deploy it;
#   2. `promtool check metrics` (the exposition linter) on a live /metrics
#      of the real binary after an order went through it.
# Needs promtool (Debian package prometheus; .ci/run installs it) and a
# built binary (default target/debug/factory-sidecar, or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/factory-sidecar}
RULES=config/prometheus/factory-sidecar-rules.yml
command -v promtool >/dev/null || { echo "promtool missing: apt-get install prometheus" >&2; exit 1; }
[[ -x $BIN ]] || { echo "no binary at $BIN (cargo build first)" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/factory-promtool.XXXXXX")
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT

promtool check rules "$RULES"
RUNBOOK_URL=https://runbooks.example/factory-sidecar/RUNBOOK.md \
    envsubst '$RUNBOOK_URL' <"$RULES" >"$TMP/rules.yml"
grep -q 'runbook_url: "https://runbooks.example/' "$TMP/rules.yml" || { echo "RUNBOOK_URL not substituted" >&2; exit 1; }
grep -q '{{ $labels.instance }}' "$TMP/rules.yml" || { echo "envsubst ate the alert templates" >&2; exit 1; }
promtool check rules "$TMP/rules.yml"

# Waits (up to 20 s) for a line matching $2 in file $1 and prints it.
wait_line() {
    for _ in $(seq 200); do
        grep -m1 -E "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no line matching '$2' in $1:" >&2; cat "$1" >&2; return 1
}

"$BIN" sim --listen 127.0.0.1:0 >"$TMP/sim.out" 2>&1 &
PIDS+=($!)
SIM=$(wait_line "$TMP/sim.out" 'sim listening on' | awk '{print $4}')
cat >"$TMP/sidecar.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[upstream]
url = "$SIM"
[admin]
listen = "127.0.0.1:0"
[log]
format = "json"
TOML
"$BIN" run --config "$TMP/sidecar.toml" 2>"$TMP/run.log" &
PIDS+=($!)
SERVING=$(wait_line "$TMP/run.log" '"factory-sidecar serving"')
PROXY=$(sed -E 's/.*"proxy_addr":"([^"]+)".*/\1/' <<<"$SERVING")
ADMIN=$(sed -E 's/.*"admin_addr":"([^"]+)".*/\1/' <<<"$SERVING")
curl -sf -o /dev/null -H 'content-type: application/json' -H 'authorization: Bearer none' \
    --data-raw '{"diner":{"id":1,"name":"a","email":"a@b"},"order":{"items":[{"menuId":1,"description":"x","price":0.01}],"storeId":"1","franchiseId":1}}' \
    "http://$PROXY/api/order" || true
curl -sf "http://$ADMIN/metrics" >"$TMP/metrics.txt"
grep -q '^process_cpu_seconds_total ' "$TMP/metrics.txt"
grep -q '^factory_sidecar_build_info{' "$TMP/metrics.txt"
promtool check metrics <"$TMP/metrics.txt"
echo "promtool: rules and /metrics clean"
