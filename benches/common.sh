# Helpers shared by the bench scripts; sourced, not run.

# The simulator's own order body and test apiKey (src/sim/mod.rs), so every
# script sends exactly what the tests and the demo send: sets BODY and KEY.
bench_constants() { # root
    BODY=$(sed -n 's/^pub const SAMPLE_ORDER: &str = r#"\(.*\)"#;$/\1/p' "$1/src/sim/mod.rs")
    KEY=$(sed -n 's/^pub const DEFAULT_API_KEY: &str = "\(.*\)";$/\1/p' "$1/src/sim/mod.rs")
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
