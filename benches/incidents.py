#!/usr/bin/env python3
"""Orders through factory incidents, with the sidecar and without it.

Drives pizza orders the way the pizza service does (POST /api/order with the
vendor key, no timeout of its own up to Node's 300 s; an order failed when
the answer is not 2xx or the connection broke) at RATE orders/s through the
sidecar AND, in the same run and through the same incident, RATE orders/s
straight at the factory simulator. Incidents, in turn:

  throttle   chaos `throttle` (every order waits --throttle-delay, 32 s as
             the real factory), until the sidecar resolves it by itself
  down       the simulator process killed (connection refused) for
             --outage seconds, then started again on the same port
  hang       chaos `hang` (requests read, never answered) for --outage
             seconds; the requests it held are dropped when it ends
  fail       chaos `fail` (500 with a report link), until resolved
  badjwt     chaos `badjwt` (200 with a pizza JWT that does not verify):
             such a 200 counts as failed here too

For each incident and path it prints the orders sent, failed, failed after
the factory had recovered (started after the recovery), the slowest order
and the median; and when the chaos ended. Loopback only, light load (a few
hundred orders per incident), about five minutes with the defaults.

  python3 benches/incidents.py                      # every incident, release build
  python3 benches/incidents.py --only throttle,hang --throttle-delay 8s
  python3 benches/incidents.py --bin path/to/factory-sidecar --keep DIR

Needs only Python 3.8+ (asyncio) and a built binary (it runs `cargo build
--release` unless --bin is given).
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "incidents-admin-token"
LIMIT = 300.0  # the pizza service's (Node's) limit for an answer head


def sim_constants():
    """The simulator's sample order and test key, as tests and the demo use."""
    src = open(os.path.join(ROOT, "src", "sim", "mod.rs"), encoding="utf-8").read()
    body = re.search(r'pub const SAMPLE_ORDER: &str = r#"(.*)"#;', src).group(1)
    key = re.search(r'pub const DEFAULT_API_KEY: &str = "(.*)";', src).group(1)
    return body, key


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seconds(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}")
    n, unit = float(m.group(1)), m.group(2) or "s"
    return n / 1000 if unit == "ms" else n * 60 if unit == "m" else n


async def http(port, method, path, body=b"", headers=None, limit=LIMIT):
    """One HTTP/1.1 exchange on a new connection; (status, body bytes)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port), limit
    )
    try:
        head = [f"{method} {path} HTTP/1.1", f"host: 127.0.0.1:{port}", "connection: close"]
        for k, v in (headers or {}).items():
            head.append(f"{k}: {v}")
        head.append(f"content-length: {len(body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), limit)
    finally:
        writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    if any(l.lower().startswith(b"transfer-encoding:") and b"chunked" in l.lower() for l in lines):
        out, buf = b"", rest
        while buf:
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, buf = out + buf[:size], buf[size + 2:]
        rest = out
    return status, rest


class Order:
    __slots__ = ("path", "start", "end", "status", "ok", "error")

    def __init__(self, path, start):
        self.path, self.start = path, start
        self.end = self.status = self.error = None
        self.ok = False


class Bench:
    def __init__(self, args):
        self.args = args
        self.body, self.key = sim_constants()
        self.tmp = args.keep or tempfile.mkdtemp(prefix="factory-incidents.")
        os.makedirs(self.tmp, exist_ok=True)
        self.sim_port, self.proxy_port, self.admin_port = free_port(), free_port(), free_port()
        self.sim = self.sidecar = None
        self.verify_jwt = False

    # -- processes ------------------------------------------------------
    def start_sim(self):
        log = open(os.path.join(self.tmp, "sim.log"), "a")
        self.sim = subprocess.Popen(
            [self.args.bin, "sim", "--listen", f"127.0.0.1:{self.sim_port}",
             "--throttle-delay", f"{int(self.args.throttle_delay * 1000)}ms"],
            stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"},
        )
        self.wait_port(self.sim_port, "the simulator")

    def kill_sim(self):
        self.sim.send_signal(signal.SIGKILL)
        self.sim.wait()

    def start_sidecar(self):
        conf = os.path.join(self.tmp, "sidecar.toml")
        with open(conf, "w") as f:
            f.write(
                f'[server]\nlisten = "127.0.0.1:{self.proxy_port}"\n'
                f'[upstream]\nurl = "http://127.0.0.1:{self.sim_port}"\n'
                f'[admin]\nlisten = "127.0.0.1:{self.admin_port}"\ntoken = "{TOKEN}"\n'
                f'[log]\nlevel = "{self.args.log_level}"\n'
            )
        log = open(os.path.join(self.tmp, "sidecar.log"), "a")
        self.sidecar = subprocess.Popen(
            [self.args.bin, "run", "--config", conf], stdout=log, stderr=log
        )
        self.wait_port(self.admin_port, "the sidecar")

    def wait_port(self, port, what):
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit(f"{what} did not start (logs in {self.tmp})")

    def stop(self):
        for p in (self.sidecar, self.sim):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- control --------------------------------------------------------
    async def chaos(self, spec):
        status, _ = await http(self.sim_port, "PUT", "/sim/chaos", json.dumps(spec).encode(),
                               {"content-type": "application/json"}, limit=10)
        assert status == 200, f"PUT /sim/chaos {spec}: {status}"

    async def chaos_type(self):
        try:
            _, body = await http(self.sim_port, "GET", "/sim/chaos", limit=5)
            return json.loads(body)["type"]
        except (OSError, asyncio.TimeoutError, ValueError, KeyError, IndexError):
            return "unreachable"

    async def status(self):
        try:
            _, body = await http(self.admin_port, "GET", "/status",
                                 headers={"authorization": f"Bearer {TOKEN}"}, limit=5)
            return json.loads(body)
        except (OSError, asyncio.TimeoutError, ValueError, IndexError):
            return {}

    # -- orders ---------------------------------------------------------
    async def order(self, path, port, orders):
        o = Order(path, time.monotonic())
        orders.append(o)
        try:
            status, body = await http(port, "POST", "/api/order", self.body.encode(), {
                "authorization": f"Bearer {self.key}", "content-type": "application/json"})
            o.status = status
            o.ok = 200 <= status < 300
            if o.ok and self.verify_jwt:
                o.ok = await self.pizza_verifies(body)
        except (OSError, asyncio.TimeoutError, ValueError, IndexError) as e:
            o.error = type(e).__name__
        o.end = time.monotonic()

    async def pizza_verifies(self, body):
        try:
            jwt = json.loads(body)["jwt"]
            for _ in range(50):  # the factory may be restarting: ask again
                try:
                    status, _ = await http(self.sim_port, "POST", "/api/order/verify",
                                           json.dumps({"jwt": jwt}).encode(),
                                           {"content-type": "application/json"}, limit=10)
                    return status == 200
                except OSError:
                    await asyncio.sleep(0.2)
        except (ValueError, KeyError, TypeError):
            pass
        return False

    async def drive(self, orders, stop):
        """RATE orders/s through the sidecar and RATE straight at the factory."""
        period, n, t0, tasks = 1.0 / self.args.rate, 0, time.monotonic(), set()
        while not stop.is_set():
            for path, port in (("sidecar", self.proxy_port), ("direct", self.sim_port)):
                t = asyncio.ensure_future(self.order(path, port, orders))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            n += 1
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, t0 + n * period - time.monotonic()))
            except asyncio.TimeoutError:
                pass
        if tasks:
            await asyncio.wait(tasks, timeout=LIMIT + 5)

    async def settle(self):
        """Between incidents: the factory healthy, the circuit closed, nobody waiting."""
        await self.chaos({"type": "none"})
        for _ in range(600):
            s = await self.status()
            if s.get("circuit", {}).get("state") == "closed" and s.get("orders", {}).get("waiting") == 0:
                return
            await asyncio.sleep(0.1)

    async def incident(self, name):
        a = self.args
        await self.settle()
        self.verify_jwt = name == "badjwt"
        orders, stop = [], asyncio.Event()
        driving = asyncio.ensure_future(self.drive(orders, stop))
        await asyncio.sleep(a.before)
        began = time.monotonic()
        print(f"  {name}: began at {time.strftime('%H:%M:%S', time.gmtime())} UTC", flush=True)
        if name == "down":
            self.kill_sim()
            await asyncio.sleep(a.outage)
            self.start_sim()
            recovered = time.monotonic()
        elif name == "hang":
            await self.chaos({"type": "hang"})
            await asyncio.sleep(a.outage)
            await self.chaos({"type": "none"})
            recovered = time.monotonic()
        else:
            spec = {"type": name}
            if name == "throttle":
                spec["delay"] = f"{int(a.throttle_delay * 1000)}ms"
            await self.chaos(spec)
            # Ended by the sidecar's resolve (bounded: 3 delays or 2 minutes).
            limit = began + max(120.0, 3 * a.throttle_delay)
            while await self.chaos_type() == name and time.monotonic() < limit:
                await asyncio.sleep(0.05)
            recovered = time.monotonic()
        await asyncio.sleep(a.after)
        stop.set()
        await driving
        return began, recovered, orders, await self.status()

    async def run(self):
        results = []
        for name in self.args.only:
            began, recovered, orders, status = await self.incident(name)
            results.append((name, began, recovered, orders, status))
            print(f"  {name}: done ({len(orders)} orders)", flush=True)
        return results


def report(results, args):
    print()
    print(f"{args.rate:g} orders/s through the sidecar and {args.rate:g}/s straight to the factory,"
          f" throttle {args.throttle_delay:g} s, outages {args.outage:g} s")
    cols = "{:<9} {:<8} {:>6} {:>6} {:>14} {:>8} {:>8}  {}"
    print(cols.format("incident", "path", "orders", "failed", "after-recovery", "slowest", "median", "incident lasted"))
    for name, began, recovered, orders, status in results:
        for path in ("sidecar", "direct"):
            mine = [o for o in orders if o.path == path]
            failed = [o for o in mine if not o.ok]
            after = [o for o in failed if o.start >= recovered]
            took = [o.end - o.start for o in mine if o.end is not None]
            lasted = f"{recovered - began:.2f} s" if path == "sidecar" else ""
            print(cols.format(
                name, path, len(mine), len(failed), len(after),
                f"{max(took):.1f} s" if took else "-",
                f"{statistics.median(took):.2f} s" if took else "-", lasted))
        for lost in [o for o in orders if o.path == "sidecar" and not o.ok]:
            took = f"{lost.end - lost.start:.1f} s" if lost.end is not None else "-"
            print(f"{'':9} failed through the sidecar: started {lost.start - began:+.1f} s from the"
                  f" incident, took {took}, status {lost.status}, error {lost.error}")
        o = status.get("orders", {})
        b = status.get("retryBudget", {})
        print(f"{'':9} sidecar: parked {o.get('parkedTotal', '?')}, released {o.get('releasedTotal', '?')},"
              f" turned away {o.get('turnedAwayTotal', '?')}; retries {b.get('retriesTotal', '?')},"
              f" refused by the budget {b.get('refusedTotal', '?')} (totals since start)")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", help="factory-sidecar binary (default: cargo build --release)")
    p.add_argument("--rate", type=float, default=5.0, help="orders per second per path [5]")
    p.add_argument("--throttle-delay", type=seconds, default=32.0, help="throttle delay [32s]")
    p.add_argument("--outage", type=seconds, default=20.0, help="how long down and hang last [20s]")
    p.add_argument("--before", type=seconds, default=5.0, help="healthy orders before each incident [5s]")
    p.add_argument("--after", type=seconds, default=10.0, help="orders after each recovery [10s]")
    p.add_argument("--only", default="throttle,down,hang,fail,badjwt",
                   type=lambda s: [x for x in s.split(",") if x], help="incidents to run, in order")
    p.add_argument("--keep", help="keep configs and logs in this directory")
    p.add_argument("--log-level", default="info",
                   help="the sidecar's [log] level, e.g. info,factory_sidecar=debug [info]")
    args = p.parse_args()
    unknown = set(args.only) - {"throttle", "down", "hang", "fail", "badjwt"}
    if unknown:
        p.error(f"unknown incidents: {', '.join(sorted(unknown))}")
    if not args.bin:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        args.bin = os.path.join(target, "release", "factory-sidecar")
    bench = Bench(args)
    try:
        bench.start_sim()
        bench.start_sidecar()
        print(f"simulator :{bench.sim_port}, sidecar :{bench.proxy_port} (admin :{bench.admin_port})", flush=True)
        results = asyncio.run(bench.run())
    finally:
        bench.stop()
    report(results, args)


if __name__ == "__main__":
    main()
