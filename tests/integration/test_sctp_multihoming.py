"""SCTP multihoming through the LB with real associations (libusrsctp peers): a rule with a
secondary IP, a multihomed endpoint whose INIT-ACK addresses the datapath rewrites to the VIPs,
and a client that connects to the VIP only, loses its primary path (link down) and carries on
over the secondary VIP, which the datapath sends to the same endpoint.

Topology: LbTopology (client, lb, be1..be3) plus a second client link (client eth1 10.0.2.2 <->
lb eth4 10.0.2.1), the route to the secondary VIP over it. An echo server runs in every
backend: a secondary path balanced like a new flow (round robin) would reach another backend,
whose stack aborts the unknown association.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from pyloxi.testing.lab.topology import ROUTED_VIP, LbTopology, backend_ip

from ..waiting import wait_until
from .conftest import DaemonHandle

PORT = 38412
VIP2 = "20.0.1.100"
CLIENT2 = "10.0.2.2"
EP_ALT = "10.0.21.2"  # be1's second address (only ever seen in its INIT-ACK)
ECHO = re.compile(r"echo seq=(\d+) sid=\d+ ppid=\d+ from=(\S+) rtt_ms=([\d.]+)")
MSG = re.compile(r"msg id=\d+ sid=\d+ ppid=\d+ from=(\S+) len=\d+ data=(\S+)")

pytestmark = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "ldconfig -p | grep -q libusrsctp.so.2"]).returncode != 0,
    reason="libusrsctp2 is not installed (scripts/install-deps)")


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


@pytest.fixture(scope="module")
def mh() -> Iterator[tuple[LbTopology, DaemonHandle, list[str]]]:
    """The lab with a second client link, the daemon, and an echo server in each backend (the
    logs); be1 is multihomed."""
    topo = LbTopology(3, prefix="plmh")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        topo.lab.link(topo.client, "eth1", f"{CLIENT2}/24", topo.lb, "eth4", "10.0.2.1/24")
        topo.client.run(f"ip route add {VIP2}/32 via 10.0.2.1 dev eth1")
        topo.backends[0].run(f"ip addr add {EP_ALT}/24 dev eth0")
        daemon = DaemonHandle(topo)
        daemon.start()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        logs = []
        for i, be in enumerate(topo.backends, 1):
            log = os.path.join(topo.tmp.name, f"sctp-be{i}.log")
            # usrsctp sends from the last address bound: be1's own (routed) address
            bind = f"{EP_ALT},{backend_ip(1)}" if i == 1 else backend_ip(i)
            with open(log, "wb") as out:
                procs.append(be.popen([sys.executable, "-m", "pyloxi.testing.usrsctp", "--fast",
                                       "server", "--bind", bind, "--port", str(PORT)],
                                      stdout=out, stderr=subprocess.STDOUT, env=env))
            logs.append(log)
        for log in logs:
            wait_until(lambda log=log: "listening" in read(log), 10, what="a usrsctp server")
        try:
            yield topo, daemon, logs
        finally:
            daemon.stop()
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        topo.close()


@pytest.mark.parametrize("mode", ["default", "fullnat"])
def test_association_survives_primary_path_loss_on_the_secondary_vip(
        mh: tuple[LbTopology, DaemonHandle, list[str]], mode: str) -> None:
    topo, lb, logs = mh
    lb.cli("delete", "lb", "--all", check=False)
    start = [len(read(log)) for log in logs]  # each case reads its own association's lines
    lb.cli("create", "lb", ROUTED_VIP, f"--sctp={PORT}:{PORT}", f"--secips={VIP2}",
           f"--mode={mode}",
           "--endpoints=" + ",".join(f"{backend_ip(i)}:1" for i in (1, 2, 3)))
    # listed as loxilb lists them, and plumbed on the LB like the VIP
    [rule] = lb.api("GET", "/config/loadbalancer/all").json()["lbAttr"]
    assert rule["secondaryIPs"] == [{"secondaryIP": VIP2}]
    wait_until(lambda: VIP2 in topo.lb.run("ip -4 addr show").stdout + topo.lb.run(
        "ip -4 route show table local").stdout, 10, what="the secondary VIP on the LB")

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    count, interval = 30, 0.1
    with tempfile.TemporaryDirectory(prefix="plmh-") as tmp:
        clog = os.path.join(tmp, "client.log")
        with open(clog, "wb") as out:
            # the VIP only: the secondary VIP comes from the (rewritten) INIT-ACK
            proc = topo.client.popen(
                [sys.executable, "-m", "pyloxi.testing.usrsctp", "--fast", "client",
                 "--connect", ROUTED_VIP, "--bind", f"10.0.1.2,{CLIENT2}", "--port", str(PORT),
                 "--count", str(count), "--interval", str(interval), "--timeout", "25"],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until(lambda: len(ECHO.findall(read(clog))) >= 5, 15, what="five echoes")
            t_down = time.monotonic()
            topo.client.run("ip link set eth0 down")  # the primary path (default route) dies
            rc = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        took = time.monotonic() - t_down
        text = read(clog)
    assert rc == 0, text + "".join(f"\n--- be{i}:\n" + read(log)
                                   for i, log in enumerate(logs, 1))
    echoes = ECHO.findall(text)
    assert [int(seq) for seq, _, _ in echoes] == list(range(count)), text
    # the client learnt the secondary VIP from the endpoint's INIT-ACK and switched to it
    assert re.search(rf"path id=\d+ addr={re.escape(ROUTED_VIP)}:{PORT} state=unreachable",
                     text), text
    assert not re.search(rf"addr={re.escape(VIP2)}:{PORT} state=unreachable", text), text
    # the endpoint's addresses never reached the client
    assert EP_ALT not in text and backend_ip(1) not in text, text
    # every message reached be1, the association's endpoint, on both paths
    srv = [read(log)[at:] for log, at in zip(logs, start, strict=True)]
    assert [data for _, data in MSG.findall(srv[0])] == [f"hello-{i}" for i in range(count)], \
        srv[0]
    assert not MSG.findall(srv[1]) and not MSG.findall(srv[2])
    worst = max(float(rtt) for _, _, rtt in echoes)
    # conntrack shows both paths as flows of the rule, to be1
    flows = lb.api("GET", "/config/conntrack/all").json()["ctAttr"]
    paths = {(f["destinationIP"], f["conntrackAct"].split(":")[0]) for f in flows
             if f["protocol"] == "sctp"}
    act = f"dnat-{backend_ip(1)}" if mode == "default" else f"fdnat-{ROUTED_VIP},{backend_ip(1)}"
    assert (VIP2, act) in paths, flows
    topo.client.run("ip link set eth0 up")
    topo.client.run("ip route replace default via 10.0.1.1")
    print(f"{mode}: sctp multihoming through the LB: failover to {VIP2} "
          f"(worst echo {worst:.0f} ms), the remaining messages in {took:.2f}s")
