"""HA with keepalived: two LB nodes, VRRP between them, the shipped notify script telling each
daemon its state (POST /config/cistate); the VIP follows the MASTER.

    client ns: br0 10.1.0.10/24 -- c1 -- eth0 lb1 10.1.0.1 -- eth1 -- be1 10.0.11.2
                                -- c2 -- eth0 lb2 10.1.0.2 -- eth1 -- be2 10.0.12.2

Both nodes hold the same rule (VIP 10.1.0.200:80, instance llb-inst0); each node's endpoint is
its own backend, so the answer tells which node served. br0 is a hub (it learns no MAC, as a
switch whose table aged out or whose port went down): every frame for the MASTER reaches the
BACKUP too, which must not serve it. A prober in the client opens a new TCP
connection every 20 ms; the takeover time is from the master's link going down to the first
answer from the other node. Measured times are printed (pytest -s), never asserted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from pyloxi.testing.lab import cleanup_stale
from pyloxi.testing.lab.netns import Lab, Netns
from pyloxi.testing.lab.topology import wait_listening

from ..waiting import wait_until
from .conftest import ROOT, DaemonHandle

pytestmark = pytest.mark.skipif(shutil.which("keepalived") is None,
                                reason="keepalived not installed (scripts/install-deps)")

VIP = "10.1.0.200"
VRRP_ADDR = "10.1.0.100"
CLIENT = "10.1.0.10"
NOTIFY = os.path.join(ROOT, "deploy", "keepalived", "notify.sh")

HTTP_SERVER = """
import http.server, sys
name = sys.argv[1].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", str(len(name)))
        self.end_headers(); self.wfile.write(name)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 80), H).serve_forever()
"""

# A new connection attempt every 20 ms, each given 0.3 s (so an outage does not slow the
# attempts down); one line per attempt: "<start, monotonic> <backend name or ->".
# CLOCK_MONOTONIC is system-wide: the test compares these times with its own.
PROBER = """
import asyncio, sys, time
vip = sys.argv[1]
async def attempt(t):
    who = "-"
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(vip, 80), 0.3)
        w.write(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
        data = await asyncio.wait_for(r.read(), 1.0)
        w.close()
        who = data.rsplit(b"\\r\\n\\r\\n", 1)[-1].decode() or "-"
    except (OSError, asyncio.TimeoutError):
        pass
    print(f"{t:.4f} {who}", flush=True)
async def main():
    tasks = set()
    while True:
        task = asyncio.create_task(attempt(time.monotonic()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        await asyncio.sleep(0.02)
asyncio.run(main())
"""

KEEPALIVED_CONF = """
global_defs {{
    router_id {name}
    enable_script_security
    script_user root
    vrrp_garp_master_delay 0
}}
vrrp_instance llb-inst0 {{
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id 51
    priority {priority}
    version 3
    advert_int 0.1
    virtual_ipaddress {{
        {vrrp}/24
    }}
    notify "{notify} llb-inst0 http://127.0.0.1:11111"
}}
"""


class Node:
    def __init__(self, lab: Lab, tmp: str, ns: Netns, name: str, backend: str) -> None:
        self.ns, self.name, self.backend = ns, name, backend
        self.daemon = DaemonHandle(SimpleNamespace(lb=ns, lab=lab,  # type: ignore[arg-type]
                                                   tmp=SimpleNamespace(name=tmp)), name)
        self.tmp = tmp

    def start_keepalived(self, priority: int) -> None:
        d = os.path.join(self.tmp, f"ka-{self.name}")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "keepalived.conf")
        Path(conf).write_text(KEEPALIVED_CONF.format(name=self.name, priority=priority,
                                                     vrrp=VRRP_ADDR, notify=NOTIFY))
        log = open(os.path.join(d, "log"), "a")  # noqa: SIM115 - the process's for its life
        self.ns.popen(["keepalived", "-n", "-l", "-D", "-f", conf,
                       "-p", f"{d}/keepalived.pid", "-r", f"{d}/vrrp.pid",
                       "-c", f"{d}/checkers.pid"], stdout=log, stderr=subprocess.STDOUT)
        self.ka_log = os.path.join(d, "log")

    def state(self) -> str:
        rows = self.daemon.api("GET", "/config/cistate/all").json()["Attr"]
        return next(r["state"] for r in rows if r["instance"] == "llb-inst0")

    def wait_state(self, state: str, timeout: float = 20) -> None:
        try:
            wait_until(lambda: self.state() == state, timeout,
                       what=f"{self.name} cistate {state}")
        except TimeoutError:
            raise AssertionError(f"{self.name} not {state}: {self.state()}; keepalived: "
                                 f"{Path(self.ka_log).read_text()[-1500:]}") from None

    def vip_local(self) -> bool:
        out = self.ns.run(["ip", "route", "show", "table", "local", f"{VIP}/32"]).stdout
        return VIP in out


@pytest.fixture
def ha() -> Iterator[tuple[Netns, Node, Node]]:
    cleanup_stale()
    lab = Lab()
    tmp = tempfile.mkdtemp(prefix=f"{lab.tag}-ha-")
    try:
        client = lab.netns("cl")
        nodes = []
        for i, name in ((1, "lb1"), (2, "lb2")):
            ns = lab.netns(name)
            be = lab.netns(f"be{i}")
            lab.link(client, f"c{i}", None, ns, "eth0", f"10.1.0.{i}/24")
            lab.link(ns, "eth1", f"10.0.1{i}.1/24", be, "eth0", f"10.0.1{i}.2/24")
            be.run(f"ip route add default via 10.0.1{i}.1")
            for key, value in (("net.ipv4.ip_forward", 1), ("net.ipv4.conf.all.rp_filter", 0),
                               ("net.ipv4.conf.default.rp_filter", 0)):
                ns.sysctl(key, value)
            be.popen([sys.executable, "-c", HTTP_SERVER, f"be{i}"])
            wait_listening(be, 80)
            nodes.append(Node(lab, tmp, ns, name, f"be{i}"))
        client.run("ip link add br0 type bridge ageing_time 0")  # a hub: floods everything
        for i in (1, 2):
            client.run(f"ip link set c{i} master br0")
        client.run(f"ip addr add {CLIENT}/24 dev br0")
        client.run("ip link set br0 up")
        for node in nodes:
            node.daemon.start()
        yield client, nodes[0], nodes[1]
    finally:
        for node in locals().get("nodes", []):
            node.daemon.stop()
        lab.close()
        shutil.rmtree(tmp, ignore_errors=True)


def create_rule(node: Node, backend_ip: str) -> None:
    r = node.daemon.api("POST", "/config/loadbalancer", {
        "serviceArguments": {"externalIP": VIP, "port": 80, "protocol": "tcp",
                             "name": "web:llb-inst0"},
        "endpoints": [{"endpointIP": backend_ip, "targetPort": 80, "weight": 1}]})
    assert r.status_code == 200, r.text


def attempts(lines: list[str], since: float) -> list[tuple[float, str]]:
    out = []
    for line in lines:
        t, _, who = line.partition(" ")
        if float(t) >= since:
            out.append((float(t), who.strip()))
    return out


def test_vip_follows_the_vrrp_master(ha: tuple[Netns, Node, Node]) -> None:
    client, lb1, lb2 = ha
    # Both daemons start NOT_DEFINED (loxilb's start state); keepalived then tells them.
    assert lb1.state() == lb2.state() == "NOT_DEFINED"
    lb1.start_keepalived(priority=150)
    lb1.wait_state("MASTER")
    lb2.start_keepalived(priority=100)
    lb2.wait_state("BACKUP")
    create_rule(lb1, "10.0.11.2")
    create_rule(lb2, "10.0.12.2")
    wait_until(lb1.vip_local, 10, what="VIP local on the MASTER")
    assert not lb2.vip_local()  # BACKUP: the rule is there, the VIP is not local

    out_path = os.path.join(lb1.tmp, "prober.log")
    with open(out_path, "w") as out:
        client.popen([sys.executable, "-u", "-c", PROBER, VIP], stdout=out)

    def lines() -> list[str]:
        return [ln for ln in Path(out_path).read_text().splitlines() if ln.count(" ") == 1]

    def answered_by(who: str, since: float) -> float | None:
        hits = [t for t, w in attempts(lines(), since) if w == who]
        return min(hits) if hits else None  # lines come in the order attempts ended

    start = time.monotonic()
    wait_until(lambda: len([w for _, w in attempts(lines(), start) if w == "be1"]) >= 10, 20,
               what="VIP answers from lb1")
    assert all(w in ("be1", "-") for _, w in attempts(lines(), start))
    # the BACKUP saw every SYN (the hub floods them) and opened no flow
    assert lb2.daemon.api("GET", "/config/conntrack/all").json()["ctAttr"] == []

    takeovers: list[float] = []
    master, backup = lb1, lb2
    for _ in range(3):
        t0 = time.monotonic()
        master.ns.run("ip link set eth0 down")
        backup.wait_state("MASTER")
        wait_until(lambda b=backup, t=t0: answered_by(b.backend, t) is not None, 20,
                   what=f"VIP answers from {backup.name}")
        first = answered_by(backup.backend, t0)
        assert first is not None
        takeovers.append(first - t0)
        assert backup.vip_local()
        # The old master's link is back: keepalived there goes FAULT -> BACKUP (nopreempt
        # keeps the new master), and the old master's VIP stays withdrawn.
        master.wait_state("FAULT")
        master.ns.run("ip link set eth0 up")
        master.wait_state("BACKUP")
        assert not master.vip_local()
        settled = time.monotonic()
        wait_until(lambda b=backup, t=settled: answered_by(b.backend, t) is not None, 20,
                   what=f"VIP still answering from {backup.name}")
        assert all(w in (backup.backend, "-") for _, w in attempts(lines(), settled))
        master, backup = backup, master
    # A BACKUP whose daemon restarts stays BACKUP (keepalived would not tell it again): its
    # VIP stays withdrawn and the MASTER keeps serving alone.
    backup.daemon.restart()
    assert backup.state() == "BACKUP"
    assert not backup.vip_local()
    restarted = time.monotonic()
    wait_until(lambda m=master, t=restarted: answered_by(m.backend, t) is not None, 20,
               what=f"VIP answering from {master.name} after the backup's restart")
    assert all(w in (master.backend, "-") for _, w in attempts(lines(), restarted))
    print(f"\nHA takeover (link down -> first new TCP connection answered): "
          f"{', '.join(f'{t * 1000:.0f} ms' for t in takeovers)}")
