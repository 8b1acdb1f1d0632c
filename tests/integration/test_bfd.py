"""Built-in BFD between two real daemons: the HA state follows it, as in loxilb.

    lb1 ns: eth0 10.1.0.1/24 ---- eth0 10.1.0.2/24 :lb2 ns     (BFD, UDP 3784, TTL 255)

lb1 gets its session from `--ka`, lb2 from `pyloxi create bfd` (the REST API). Both reach Up;
the higher address (lb2) is MASTER, lb1 BACKUP, and the MASTER's rule VIP is local, the
BACKUP's is not. lb2 is killed with SIGKILL: lb1 becomes MASTER (the measured time is printed,
not asserted) and takes the VIP. lb2 comes back (its session from <state-dir>/bfd.json) as
BACKUP: the node that took over stays MASTER (loxilb's discriminator rule). Then the link
between them is cut (both serve) and healed: one MASTER again, the one BACKUP before the cut.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from pyloxi.testing.lab import cleanup_stale
from pyloxi.testing.lab.netns import Lab, Netns

from ..waiting import wait_until
from .conftest import DaemonHandle

VIP = "10.1.0.200"
INTERVAL_US = 100_000  # loxilb's minimum: detection time 3 x 100 ms


class Node:
    def __init__(self, lab: Lab, tmp: str, ns: Netns, name: str) -> None:
        self.ns, self.name = ns, name
        self.daemon = DaemonHandle(SimpleNamespace(lb=ns, lab=lab,  # type: ignore[arg-type]
                                                   tmp=SimpleNamespace(name=tmp)), name)

    def ha(self) -> str:
        rows = self.daemon.api("GET", "/config/cistate/all").json()["Attr"]
        return next(r["state"] for r in rows if r["instance"] == "llb-inst0")

    def bfd(self) -> list[dict[str, object]]:
        return list(self.daemon.api("GET", "/config/bfd/all").json()["Attr"])

    def bfd_up(self) -> bool:
        return [s["state"] for s in self.bfd()] == ["BFDUp"]

    def vip_local(self) -> bool:
        return VIP in self.ns.run(["ip", "route", "show", "table", "local", f"{VIP}/32"]).stdout

    def wait(self, cond: str, check: object, timeout: float = 20) -> float:
        try:
            return wait_until(check, timeout, what=f"{self.name} {cond}")  # type: ignore[arg-type]
        except TimeoutError:
            raise AssertionError(f"{self.name} not {cond}: ha {self.ha()}, bfd {self.bfd()}\n"
                                 f"{self.daemon.log_tail()}") from None


@pytest.fixture
def nodes() -> Iterator[tuple[Node, Node]]:
    cleanup_stale()
    lab = Lab()
    tmp = tempfile.mkdtemp(prefix=f"{lab.tag}-bfd-")
    made: list[Node] = []
    try:
        ns1, ns2 = lab.netns("lb1"), lab.netns("lb2")
        lab.link(ns1, "eth0", "10.1.0.1/24", ns2, "eth0", "10.1.0.2/24")
        made += [Node(lab, tmp, ns1, "lb1"), Node(lab, tmp, ns2, "lb2")]
        made[0].daemon.extra_args = ["--ka", f"10.1.0.2:10.1.0.1:{INTERVAL_US}"]
        for node in made:
            node.daemon.start()
        yield made[0], made[1]
    finally:
        for node in made:
            node.daemon.stop()
        lab.close()
        shutil.rmtree(tmp, ignore_errors=True)


def create_rule(node: Node) -> None:
    r = node.daemon.api("POST", "/config/loadbalancer", {
        "serviceArguments": {"externalIP": VIP, "port": 80, "protocol": "tcp",
                             "name": "web:llb-inst0"},
        "endpoints": [{"endpointIP": "10.1.0.50", "targetPort": 80, "weight": 1}]})
    assert r.status_code == 200, r.text


def test_bfd_elects_and_fails_over(nodes: tuple[Node, Node]) -> None:
    lb1, lb2 = nodes
    assert lb1.bfd()[0]["remoteIp"] == "10.1.0.2"          # from --ka
    assert lb2.bfd() == []
    lb2.daemon.cli("create", "bfd", "10.1.0.1", "--instance=llb-inst0",
                   "--sourceIP=10.1.0.2", f"--interval={INTERVAL_US}", "--retryCount=3")
    for node in (lb1, lb2):
        node.wait("BFD Up", node.bfd_up)
    lb2.wait("MASTER", lambda: lb2.ha() == "MASTER")       # 10.1.0.2 > 10.1.0.1
    lb1.wait("BACKUP", lambda: lb1.ha() == "BACKUP")
    table = lb2.daemon.cli("get", "bfd").stdout
    assert "10.1.0.1" in table and "BFDUp" in table, table
    # the rest of the cluster machinery follows: the VIP is local on the MASTER only
    for node in (lb1, lb2):
        create_rule(node)
    lb2.wait("VIP local", lb2.vip_local)
    assert not lb1.vip_local()

    t0 = time.monotonic()
    lb2.daemon.stop(signal.SIGKILL)                         # no AdminDown: lb1 must time out
    lb1.wait("MASTER", lambda: lb1.ha() == "MASTER")
    took = time.monotonic() - t0
    lb1.wait("VIP local", lb1.vip_local)
    assert lb1.bfd()[0]["state"] == "BFDDown"
    print(f"\nBFD takeover after SIGKILL of the MASTER: {took * 1000:.0f} ms "
          f"(detection time {3 * INTERVAL_US / 1000:.0f} ms + API polling)")

    # lb2 returns: its session comes from bfd.json; lb1 keeps MASTER, lb2 becomes BACKUP
    lb2.daemon.start()
    assert [s["remoteIp"] for s in lb2.bfd()] == ["10.1.0.1"]
    for node in (lb1, lb2):
        node.wait("BFD Up", node.bfd_up)
    lb2.wait("BACKUP", lambda: lb2.ha() == "BACKUP")
    assert lb1.ha() == "MASTER"
    lb2.wait("VIP withdrawn", lambda: not lb2.vip_local())
    assert lb1.vip_local()

    # the link between them is cut: each loses the other and serves (a partition); healed,
    # they settle on one MASTER again (loxilb's rule: the one that was BACKUP before the cut)
    lb1.ns.run("ip link set eth0 down")
    lb2.wait("MASTER", lambda: lb2.ha() == "MASTER")
    assert lb1.ha() == "MASTER"
    lb1.ns.run("ip link set eth0 up")
    for node in (lb1, lb2):
        node.wait("BFD Up", node.bfd_up)
    lb1.wait("BACKUP", lambda: lb1.ha() == "BACKUP")
    assert lb2.ha() == "MASTER"
    lb1.wait("VIP withdrawn", lambda: not lb1.vip_local())
    assert lb2.vip_local()
