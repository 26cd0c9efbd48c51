#!/usr/bin/env python3
"""Soak driver for factory-sidecar (stdlib only; started by benches/soak.sh).

Sends orders through the sidecar at a steady rate, as the pizza service does,
while the simulated factory cycles through every chaos type. Every 200 answer's
pizza JWT is checked with the factory's own POST /api/order/verify, so a badjwt
pizza passed through counts as a failed order. Samples the sidecar's RSS and
open file descriptors from /proc. Prints a report and exits 1 when a target is
missed: failed orders under fail/badjwt, or RSS/fd growth >= 5% after warm-up.
"""

import argparse
import http.client
import json
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
    args = p.parse_args()

    sidecar, sim = Endpoint(args.sidecar), Endpoint(args.sim)
    headers = {"content-type": "application/json", "authorization": f"Bearer {args.api_key}"}
    stats = {name: {"orders": 0, "failed": 0, "lat": []} for name, _ in PHASES}
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
        if name in ("fail", "badjwt", "none") and s["failed"]:
            missed.append(f"{s['failed']} failed orders under {name}")

    after = [s for s in samples if s[0] >= args.warmup]
    if len(after) >= 2:
        rss0, fd0 = after[0][1], after[0][2]
        rss_max = max(s[1] for s in after)
        fd_max = max(s[2] for s in after)
        rss_last, fd_last = after[-1][1], after[-1][2]
        rss_growth = (rss_last - rss0) / rss0 * 100
        fd_growth = (fd_last - fd0) / max(fd0, 1) * 100
        print()
        print(f"RSS after warm-up: {rss0/1024:.1f} MiB, max {rss_max/1024:.1f} MiB, "
              f"end {rss_last/1024:.1f} MiB, growth {rss_growth:+.1f}%")
        print(f"open fds after warm-up: {fd0}, max {fd_max}, end {fd_last}, growth {fd_growth:+.1f}%")
        if rss_growth >= 5:
            missed.append(f"RSS grew {rss_growth:.1f}% after warm-up")
        if fd_growth >= 5:
            missed.append(f"open fds grew {fd_growth:.1f}% after warm-up")
    else:
        print("too short a run to judge growth after warm-up")
    print("samples (s, RSS KiB, fds): " + " ".join(f"{int(t)}:{r}:{f}" for t, r, f in samples))
    if missed:
        print("MISSED: " + "; ".join(missed))
        return 1
    print("all soak targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
