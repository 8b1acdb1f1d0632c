"""A service being reprogrammed never resets a connection: the datapath sees each version of a
service whole (config, endpoints and slot table flip together) and the service keys of a live
rule are never rewritten, so churn elsewhere cannot recycle them under a packet."""

from __future__ import annotations

import os
import re
import sys

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.libbpf import Map
from pyloxi.testing.lab.topology import ROUTED_VIP, backend_ip

from .conftest import API_PORT, DaemonHandle

CHURN_SECONDS = int(os.environ.get("PYLOXI_CHURN_SECONDS", "25"))

# Runs inside the LB namespace for the whole test: every 50 ms one other VIP is created, an
# older one deleted, and the VIP under test flips between one and two endpoints (the first is
# always kept, so every connection has somewhere to go).
_CHURN = """
import httpx, sys, time
base, vip, dur, be1, be2 = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
c = httpx.Client(base_url=base, timeout=30)
def rule(ip, eps):
    return {"serviceArguments": {"externalIP": ip, "port": 80, "protocol": "tcp"},
            "endpoints": [{"endpointIP": e, "targetPort": 80, "weight": 1} for e in eps]}
def other(i):
    return "20.0.%d.%d" % (1 + i // 200 % 50, 1 + i % 200)
end, n, bad = time.monotonic() + dur, 0, []
while time.monotonic() < end:
    rs = [c.post("/config/loadbalancer", json=rule(other(n), [be1, be2])),
          c.post("/config/loadbalancer", json=rule(vip, [be1] if n % 2 else [be1, be2]))]
    if n >= 4:
        rs.append(c.delete("/config/loadbalancer/externalipaddress/%s/port/80/protocol/tcp"
                           % other(n - 4)))
    bad += [r.text for r in rs if r.status_code != 200]
    n += 1
    time.sleep(0.05)  # the scenario's pace, not a wait: a change every 50 ms
print(n, len(bad), bad[:3])
"""


def _wrk_failures(out: str) -> tuple[int, int]:
    """(requests completed, failed: socket errors of any kind plus non-2xx answers)."""
    m = re.search(r"(\d+) requests in", out)
    assert m is not None, out
    done = int(m.group(1))
    failed = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        failed += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        failed += int(m.group(1))
    return done, failed


def _stats(lb: DaemonHandle) -> dict[str, int]:
    """The datapath's event counters, from the pinned map."""
    out = {}
    with Map.from_pin(os.path.join(lb.pin, "stats_map")) as m:
        for i, name in enumerate(L.STAT_NAMES):
            vals = m.lookup_percpu(i.to_bytes(4, "little")) or []
            out[name] = sum(int.from_bytes(v[:8], "little") for v in vals)
    return out


def test_no_connection_fails_while_services_churn(lb: DaemonHandle) -> None:
    before = _stats(lb)
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={backend_ip(1)}:1")
    churn = lb.topo.lb.popen(
        [sys.executable, "-c", _CHURN, f"http://127.0.0.1:{API_PORT}/netlox/v1", ROUTED_VIP,
         str(CHURN_SECONDS), backend_ip(1), backend_ip(2)],
        stdout=-1, stderr=-1)
    try:
        wrk = lb.topo.client.run(
            ["wrk", "-t2", "-c16", f"-d{CHURN_SECONDS}s", "-H", "Connection: close",
             f"http://{ROUTED_VIP}/"], timeout=CHURN_SECONDS + 60)
    finally:
        out, err = churn.communicate(timeout=CHURN_SECONDS + 60)
    done, failed = _wrk_failures(wrk.stdout)
    stats = {k: v - before[k] for k, v in _stats(lb).items()}
    print(wrk.stdout, out.decode(), stats)  # the numbers, for -s
    rounds, api_errors, sample = out.decode().split(" ", 2)
    assert int(api_errors) == 0, sample + err.decode()[-2000:]
    assert int(rounds) > CHURN_SECONDS  # the churn really ran (about 10 rounds a second)
    assert done > 1000, wrk.stdout
    # a new flow that found no endpoint is what a half-programmed service looks like
    assert stats["no_endpoint"] == 0, stats
    assert failed == 0, (wrk.stdout, stats)
