"""The SYN-flood stage of `make bench`: do established flows survive a flood of spoofed SYNs?

While bench/synflood.c sends SYNs from random spoofed sources (10.128.0.0/9, routed to a
blackhole inside the LB namespace, so SYN-ACKs die there) to the VIP as fast as the client
namespace can, N long-lived TCP flows through the same VIP keep downloading (bench/flows.py).
Reported: flows broken (target 0), the flows' throughput during the flood against the same flows
just before it, the flood's rate, and whether a fresh connection still gets through after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from pyloxi.testing.lab.topology import wait_listening

if TYPE_CHECKING:
    from bench.run import Bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIP = "20.0.0.110"
PORT = 9100  # bulk: streams zeros
ECHO_PORT = 9101  # idle flows: echo
BE1, BE2 = "10.0.11.2", "10.0.11.3"
SPOOF_NET, SPOOF_LEN = "10.128.0.0", 9


def build_flooder(out_dir: str) -> str:
    exe = os.path.join(out_dir, "synflood")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, os.path.join(ROOT, "bench", "synflood.c")],
                   check=True)
    return exe


def run(bench: Bench, out_dir: str, bulk: int = 8, idle: int = 64,
        every_s: float = 5.0, phase_s: float = 10.0,
        ct_entries: int | None = None) -> dict[str, Any]:
    topo = bench.topo
    assert topo is not None
    exe = build_flooder(out_dir)
    be = topo.backends[0]
    servers = [be.popen(["socat", "-u", "-b", "262144", "OPEN:/dev/zero",
                         f"TCP-LISTEN:{PORT},reuseaddr,fork,backlog=4096"]),
               be.popen(["socat", f"TCP-LISTEN:{ECHO_PORT},reuseaddr,fork,backlog=4096",
                         "EXEC:cat"])]
    # A second address on the backend makes a second endpoint: a flow that loses its conntrack
    # entries and is balanced again may land on the other one, where its connection is unknown.
    be.run(["ip", "addr", "add", f"{BE2}/24", "dev", "eth0"])
    topo.lb.run(["ip", "route", "replace", "blackhole", f"{SPOOF_NET}/{SPOOF_LEN}"])
    mark = os.path.join(topo.tmp.name, "flood-now")
    out = os.path.join(topo.tmp.name, "flows.json")
    try:
        wait_listening(be, PORT)
        wait_listening(be, ECHO_PORT)
        extra = ("--conntrack-entries", str(ct_entries), "--conntrack-half-open",
                 str(ct_entries)) if ct_entries else ()
        with bench.daemon(topo.lb.name, extra=extra):
            for port in (PORT, ECHO_PORT):
                bench.cli("create", "lb", VIP, f"--tcp={port}:{port}",
                          f"--endpoints={BE1}:1,{BE2}:1", f"--name=synflood{port}")
            reader = topo.client.popen(
                [sys.executable, "-m", "bench.flows", VIP, "--bulk-port", str(PORT),
                 "--bulk", str(bulk), "--echo-port", str(ECHO_PORT), "--idle", str(idle),
                 "--every", str(every_s), "--phase-s", str(phase_s), "--mark", mark,
                 "--json", out], cwd=ROOT)
            deadline = time.monotonic() + phase_s + 30
            while not os.path.exists(mark):
                if reader.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("flow reader ended before the flood phase")
                time.sleep(0.05)
            flood = topo.client.run([exe, VIP, str(ECHO_PORT), SPOOF_NET, str(SPOOF_LEN),
                                     str(phase_s)], timeout=phase_s + 30).stdout
            reader.wait(timeout=phase_s + 30)
            topo.lab.processes.remove(reader)
            after = topo.client.run(["curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w",
                                     "%{http_code}", f"telnet://{VIP}:{PORT}"], check=False)
    finally:
        for server in servers:
            server.terminate()
        topo.lb.run(["ip", "route", "del", "blackhole", f"{SPOOF_NET}/{SPOOF_LEN}"], check=False)
        be.run(["ip", "addr", "del", f"{BE2}/24", "dev", "eth0"], check=False)
    with open(out) as f:
        res = json.load(f)
    fl = json.loads(flood)
    bulk_bytes = [b for b, k in zip(res["bytes"], res["kinds"], strict=True) if k == "bulk"]
    before = sum(b[0] for b in bulk_bytes)
    during = sum(b[1] for b in bulk_bytes)
    return {
        "ct_entries": ct_entries or "compiled default",
        "flows": bulk + idle, "bulk": bulk, "idle": idle, "idle_every_s": every_s,
        "phase_s": phase_s,
        "flood_pps": fl["pps"], "flood_sent": fl["sent"],
        "flows_broken": len(res["broken"]), "broken_reasons": res["broken"],
        "gbps_before": before * 8 / phase_s / 1e9, "gbps_during": during * 8 / phase_s / 1e9,
        # curl's telnet:// to a server that streams zeros only ends at --max-time (exit 28):
        # 28 means the connection was made; 7 means it was refused.
        "new_conn_after": "connected" if after.returncode == 28 else
        f"curl exit {after.returncode}",
    }
