"""Probe bench: one asyncio loop probing N tcp endpoints at a fixed period; CPU it costs.

The endpoints are N addresses of 10.200.0.0/16 inside a network namespace made for the run
(`ip route add local 10.200.0.0/16 dev lo` makes the whole prefix local, so one listener on
0.0.0.0:80 — a separate acceptor process — answers for all of them). The bench process enters
that namespace, starts a ProbeManager with N tcp targets, lets it settle, then measures its own
CPU (resource.getrusage, user+system) over the measuring window.

    sudo .venv/bin/python bench/probe_bench.py [--n 10000] [--period 5] [--seconds 30]
                                               [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import resource
import sys
import time

from pyloxi.host.namespaces import CLONE_NEWNET, enter_netns, setns_fd
from pyloxi.probes import ProbeManager, ProbeTarget
from pyloxi.testing.lab.netns import Lab

ACCEPTOR = r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(65535)
while True:
    c, _ = s.accept(); c.close()
"""


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def cpu_split() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


async def run(n: int, period: float, warmup: float, seconds: float) -> dict[str, object]:
    changes = [0]
    mgr = ProbeManager(on_change=lambda t, up, why: changes.__setitem__(0, changes[0] + 1),
                       cert_dir=None, first_probe_spread=period)
    base = int(ipaddress.ip_address("10.200.0.1"))
    for i in range(n):
        ip = str(ipaddress.ip_address(base + i))
        mgr.upsert(ProbeTarget(f"{ip}_tcp_80", ip, "tcp", 80, period=period, retries=2))
    await mgr.start()
    await asyncio.sleep(warmup)
    probes0 = sum(s.probes for s in mgr.statuses())
    (u0, s0), w0 = cpu_split(), time.monotonic()
    await asyncio.sleep(seconds)
    (u1, s1), w1 = cpu_split(), time.monotonic()
    c0, c1 = u0 + s0, u1 + s1
    sts = mgr.statuses()
    probes1 = sum(s.probes for s in sts)
    down = sum(1 for s in sts if not s.up)
    failed_last = sum(1 for s in sts if s.last_ok is False)
    await mgr.stop()
    done = probes1 - probes0
    return {
        "endpoints": n, "period_s": period, "window_s": round(w1 - w0, 2),
        "cpu_s": round(c1 - c0, 3), "user_s": round(u1 - u0, 3), "sys_s": round(s1 - s0, 3),
        "cpu_pct_of_one_core": round(100 * (c1 - c0) / (w1 - w0), 1),
        "probes": done, "probes_per_s": round(done / (w1 - w0), 1),
        "expected_probes_per_s": round(n / period, 1),
        "cpu_us_per_probe": round(1e6 * (c1 - c0) / max(done, 1), 1),
        "down": down, "last_probe_failed": failed_last, "state_changes": changes[0],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--period", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=12.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespace)", file=sys.stderr)
        return 2
    with Lab(prefix="pb") as lab:
        ns = lab.netns("probe")
        ns.run("ip route add local 10.200.0.0/16 dev lo")
        ns.sysctl("net.core.somaxconn", 65535)
        ns.popen([sys.executable, "-c", ACCEPTOR])
        time.sleep(0.5)
        home = os.open("/proc/self/ns/net", os.O_RDONLY)
        enter_netns(ns.name)
        try:
            if args.loop == "uvloop":
                import uvloop

                uvloop.install()
            res = asyncio.run(run(args.n, args.period, args.warmup, args.seconds))
        finally:
            # Back home before the lab is closed: it kills every process left in the namespace.
            setns_fd(home, CLONE_NEWNET, "the bench's own network namespace")
            os.close(home)
        res["loop"] = args.loop
        res["python"] = sys.version.split()[0]
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
