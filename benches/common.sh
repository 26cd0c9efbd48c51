# Helpers shared by the bench scripts; sourced, not run.

# The simulator's own order body and test apiKey (src/sim/mod.rs), so every
# script sends exactly what the tests and the demo send: sets and exports
# BENCH_BODY and BENCH_KEY (configs/load.lua reads them). Fails when either
# cannot be read.
bench_constants() { # root
    BENCH_BODY=$(sed -n 's/^pub const SAMPLE_ORDER: &str = r#"\(.*\)"#;$/\1/p' "$1/src/sim/mod.rs")
    BENCH_KEY=$(sed -n 's/^pub const DEFAULT_API_KEY: &str = "\(.*\)";$/\1/p' "$1/src/sim/mod.rs")
    export BENCH_BODY BENCH_KEY
    [[ -n $BENCH_BODY && -n $BENCH_KEY ]] || {
        echo "cannot read SAMPLE_ORDER / DEFAULT_API_KEY from $1/src/sim/mod.rs" >&2
        return 1
    }
}

# Prints the path of the OTLP collector rotel-agent (on PATH, or inside the
# `rotel` Python package); fails when there is none.
find_rotel() {
    command -v rotel-agent 2>/dev/null && return 0
    local py
    for py in python3 python; do
        command -v "$py" >/dev/null || continue
        "$py" - <<'EOF' 2>/dev/null && return 0
import os, rotel, sys
p = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")
sys.exit(0 if os.access(p, os.X_OK) and print(p) is None else 1)
EOF
    done
    return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts the simulator (one worker) on a free loopback port, its output in
# OUT; sets SIM_PID and UP (host:port). Fails when it does not come up.
start_sim() { # out bin [sim args...]
    local out=$1 bin=$2
    shift 2
    env TOKIO_WORKER_THREADS=1 RUST_LOG=warn "$bin" sim --listen 127.0.0.1:0 "$@" >"$out" 2>&1 &
    SIM_PID=$!
    UP=""
    for _ in $(seq 200); do
        UP=$(sed -n 's|^sim listening on http://\(.*\)$|\1|p' "$out" | head -1)
        [[ -n $UP ]] && return 0
        sleep 0.05
    done
    echo "the simulator did not start" >&2
    return 1
}

# CPU time of PID and its children so far, in clock ticks: "total system"
# (user + system, then system alone: the kernel's share, mostly the TCP
# stack, which on loopback also receives every segment the proxy sends).
cpu_ticks() {
    local sum=0 sys=0 p v k
    for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
        # Fields after "pid (comm) ": utime and stime are the 12th and 13th.
        read -r v k < <(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13, $13 }' || true)
        sum=$((sum + ${v:-0})) sys=$((sys + ${k:-0}))
    done
    echo "$sum $sys"
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
