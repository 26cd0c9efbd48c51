#!/usr/bin/env python3
"""Soak driver for factory-sidecar (stdlib only; started by benches/soak.sh).

Sends orders through the sidecar at a steady rate, as the pizza service does,
while the simulated factory cycles through every chaos type. Every 200 answer's
pizza JWT is checked with the factory's own POST /api/order/verify, so a badjwt
pizza passed through counts as a failed order. Samples the sidecar's RSS and
open file descriptors from /proc. Prints a report and exits 1 when a target is
missed: failed orders under fail/badjwt, or RSS/fd growth >= 5% after warm-up
(the first whole chaos cycle), compared at the same point of later cycles.

With --fresh-tokens (the simulator started with --token-pool, as soak.sh
--fresh-tokens does) every order carries another pizza JWT, as with the real
factory, so the sidecar verifies each one instead of remembering it; the run
then also checks that the tokens were in fact fresh (more distinct ones than
the sidecar remembers).
"""

import argparse
import http.client
import json
import math
import os
import queue
import statistics
import sys
import threading
import time
import urllib.parse

PHASES = [
    ("none", {"type": "none"}),
    ("fail", {"type": "fail"}),
    ("badjwt", {"type": "badjwt"}),
    ("throttle", {"type": "throttle", "delay": "2s"}),
    ("down", {"type": "down"}),
]

# Open fds one order in flight holds when a sample falls on it: its client
# connection and its connection to the factory.
SAMPLE_FDS = 2

ORDER = json.dumps({
    "diner": {"id": 719, "name": "soak", "email": "soak@jwt.com"},
    "order": {"franchiseId": 4, "storeId": "5",
              "items": [{"menuId": 1, "description": "Veggie", "price": 0.0038}]},
})


class Endpoint:
    """One keep-alive HTTP connection per thread, re-opened on failure."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.local = threading.local()

    def request(self, method, path, body=None, headers=None, timeout=30):
        for attempt in (1, 2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
                self.local.conn = conn
            try:
                conn.request(method, path, body=body, headers=headers or {})
                res = conn.getresponse()
                return res.status, res.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable")


def proc_sample(pid):
    rss_kb = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kb, fds


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sidecar", required=True)
    p.add_argument("--sim", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--duration", type=float, default=300)
    p.add_argument("--phase", type=float, default=20, help="seconds per chaos phase")
    p.add_argument("--rate", type=float, default=40, help="orders per second")
    p.add_argument("--warmup", type=float, default=60)
    p.add_argument("--fresh-tokens", action="store_true",
                   help="the simulator answers fresh tokens (--token-pool): check that they were")
    args = p.parse_args()

    sidecar, sim = Endpoint(args.sidecar), Endpoint(args.sim)
    headers = {"content-type": "application/json", "authorization": f"Bearer {args.api_key}"}
    stats = {name: {"orders": 0, "failed": 0, "lat": []} for name, _ in PHASES}
    tokens = set()  # distinct pizza JWTs seen (bounded by the pool and the run)
    lock = threading.Lock()
    current = {"phase": "none"}
    work = queue.Queue(maxsize=1000)
    stop = threading.Event()

    def worker():
        while not stop.is_set() or not work.empty():
            try:
                phase = work.get(timeout=0.2)
            except queue.Empty:
                continue
            start = time.monotonic()
            ok = False
            try:
                status, body = sidecar.request("POST", "/api/order", ORDER, headers)
                if status == 200:
                    jwt = json.loads(body).get("jwt", "")
                    vstatus, _ = sim.request("POST", "/api/order/verify",
                                             json.dumps({"jwt": jwt}),
                                             {"content-type": "application/json"})
                    ok = vstatus == 200
                    if ok and len(tokens) < 100_000:
                        with lock:
                            tokens.add(jwt)
            except (OSError, ValueError, http.client.HTTPException):
                ok = False
            with lock:
                s = stats[phase]
                s["orders"] += 1
                s["failed"] += 0 if ok else 1
                s["lat"].append(time.monotonic() - start)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(64)]
    for t in threads:
        t.start()

    samples = []
    started = time.monotonic()
    next_order = started
    next_sample = started
    phase_index = -1
    while True:
        now = time.monotonic()
        elapsed = now - started
        if elapsed >= args.duration:
            break
        wanted = int(elapsed // args.phase) % len(PHASES)
        if wanted != phase_index:
            phase_index = wanted
            name, spec = PHASES[phase_index]
            sim.request("PUT", "/sim/chaos", json.dumps(spec), {"content-type": "application/json"})
            current["phase"] = name
            print(f"{elapsed:7.1f}s  chaos -> {name}", flush=True)
        if now >= next_sample:
            rss, fds = proc_sample(args.pid)
            samples.append((elapsed, rss, fds))
            next_sample += 5
        if now >= next_order:
            try:
                work.put_nowait(current["phase"])
            except queue.Full:
                pass
            next_order += 1.0 / args.rate
        time.sleep(max(0.0, min(next_order, next_sample) - time.monotonic()))
    sim.request("PUT", "/sim/chaos", json.dumps({"type": "none"}), {"content-type": "application/json"})
    stop.set()
    for t in threads:
        t.join(timeout=60)

    print()
    print("| chaos | orders | failed | p50 | p99 |")
    print("|---|---:|---:|---:|---:|")
    missed = []
    for name, _ in PHASES:
        s = stats[name]
        lat = sorted(s["lat"])
        p50 = statistics.median(lat) if lat else 0
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0
        print(f"| {name} | {s['orders']} | {s['failed']} | {p50*1000:.1f} ms | {p99*1000:.1f} ms |")
        if name in ("fail", "badjwt") and s["failed"]:
            missed.append(f"{s['failed']} failed orders under {name}")
    print(f"distinct pizza JWTs seen: {len(tokens)}")
    if args.fresh_tokens and len(tokens) <= 16:
        missed.append(f"tokens were not fresh: only {len(tokens)} distinct (is the simulator's --token-pool on?)")
    if stats["none"]["failed"]:
        # Not a target (zero is asked for fail and badjwt only): these are the
        # first orders after a `down` phase, answered with the open
        # breaker's fast 503 until its half-open probe closes it again.
        print(f"note: {stats['none']['failed']} orders under none failed, in the none phases "
              "right after down (the open breaker's fast 503 until its probe succeeds)")

    # Growth is judged cycle against cycle: RSS and fds rise in every
    # throttle phase (a hundred answers in flight, each with its
    # connections) and fall after it, so comparing a sample taken in one
    # phase with one taken in another measures the phase, not a leak. RSS
    # (which hardly falls) is compared at the cycles' ends and peaks; open
    # fds at their floors (the fewest in the cycle: a leaked descriptor
    # raises it, the moment a sample happens to fall on does not) and peaks;
    # an fd count must also grow by more than SAMPLE_FDS, since one order in
    # flight at a sample holds two (its client and its factory connection)
    # and at 40 orders/s the floor is only some 25 fds, where two is 8 %.
    # The warm-up is the first whole cycle (or --warmup, if longer): it
    # holds the first throttle phase, where the allocator reaches its
    # high-water.
    cycle = args.phase * len(PHASES)
    first = max(1, math.ceil(args.warmup / cycle))
    by_cycle = {}
    for t, r, f in samples:
        by_cycle.setdefault(int(t // cycle), []).append((t, r, f))
    cycles = [c for c in sorted(by_cycle) if c >= first and by_cycle[c][-1][0] >= (c + 1) * cycle - 10]
    early = [s for s in samples if s[0] >= min(args.warmup, cycle)]
    if early:
        r0 = early[0][1]
        print()
        print(f"RSS from {early[0][0]:.0f} s (before the first throttle phase) to the end: "
              f"{r0/1024:.1f} -> {samples[-1][1]/1024:.1f} MiB ({(samples[-1][1] - r0) / r0 * 100:+.1f}%), "
              "the first throttle phase's high-water included")
    if len(cycles) >= 2:
        a, b = by_cycle[cycles[0]], by_cycle[cycles[-1]]
        print(f"per chaos cycle ({cycle:.0f} s) after the first: "
              + ", ".join(f"cycle {c + 1}: RSS end {by_cycle[c][-1][1]/1024:.1f} MiB max "
                          f"{max(x[1] for x in by_cycle[c])/1024:.1f} MiB, fds end {by_cycle[c][-1][2]} "
                          f"min {min(x[2] for x in by_cycle[c])} "
                          f"max {max(x[2] for x in by_cycle[c])}" for c in cycles))
        def pct(new, old):
            return (new - old) / max(old, 1) * 100
        for what, i, base, base_name, slack in (
            ("RSS", 1, lambda cyc: cyc[-1][1], "at cycle end", 0),
            ("open fds", 2, lambda cyc: min(x[2] for x in cyc), "of the cycle's floor", SAMPLE_FDS),
        ):
            level = pct(base(b), base(a))
            peak = pct(max(x[i] for x in b), max(x[i] for x in a))
            grown = max(base(b) - base(a), max(x[i] for x in b) - max(x[i] for x in a))
            growth = max(level, peak)
            print(f"{what} growth, cycle {cycles[0] + 1} to cycle {cycles[-1] + 1}: "
                  f"{base_name} {level:+.1f}%, of the cycle's peak {peak:+.1f}%")
            if growth >= 5 and grown > slack:
                missed.append(f"{what} grew {growth:.1f}% after warm-up")
    else:
        print(f"too short a run to judge growth after warm-up: needs the first cycle plus two more "
              f"({3 * cycle:.0f} s at --phase {args.phase:.0f})")
    print("samples (s, RSS KiB, fds): " + " ".join(f"{int(t)}:{r}:{f}" for t, r, f in samples))
    if missed:
        print("MISSED: " + "; ".join(missed))
        return 1
    print("all soak targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
