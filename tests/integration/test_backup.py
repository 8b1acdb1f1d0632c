"""Save on one daemon, apply on a fresh one: the same rules, firewall and endpoints, and the
traffic goes through the second as it went through the first. Then the same with the API's
export file: everything on the second daemon removed, the file imported, the same listings.

Daemon A and daemon B run one after the other in the LB namespace, each with its own state and
pin directories; A's programs are detached before B starts, so B cannot re-adopt A's maps: what
B forwards, it learnt from the saved files."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyloxi.testing.lab import LbTopology
from pyloxi.testing.lab.topology import CLIENT_IP, ROUTED_VIP, backend_ip

from .conftest import DaemonHandle
from .traffic import http_answers, udp_answers

EPS = ",".join(f"{backend_ip(i)}:1" for i in (1, 2, 3))
DROP_UDP = (f"sourceIP:{CLIENT_IP}/32,destinationIP:{ROUTED_VIP}/32,minDestinationPort:5353,"
            "maxDestinationPort:5353,protocol:17,preference:100")
LISTS = ("/config/loadbalancer/all", "/config/firewall/all", "/config/endpoint/all")


def detach(topo: LbTopology) -> None:
    for ifname in ["eth0", *(f"eth{i}" for i in range(1, len(topo.backends) + 1))]:
        topo.lb.run(["tc", "qdisc", "del", "dev", ifname, "clsact"], check=False)


@pytest.fixture
def fresh(topo: LbTopology) -> Iterator[LbTopology]:
    detach(topo)
    yield topo
    detach(topo)


def listings(d: DaemonHandle) -> dict[str, Any]:
    """The three listings with what traffic and time change blanked (counters, probe state
    and delays)."""
    out: dict[str, Any] = {}
    for path in LISTS:
        r = d.api("GET", path)
        assert r.status_code == 200, r.text
        data = copy.deepcopy(r.json())
        for rule in data.get("lbAttr", []):
            for ep in rule["endpoints"]:
                ep["counter"] = ""
        for rule in data.get("fwAttr", []):
            rule["opts"]["counter"] = ""
        if path.startswith("/config/endpoint"):
            for ep in data["Attr"]:
                for key in ("minDelay", "avgDelay", "maxDelay", "currState", "lastProbeTime",
                            "lastProbeResult", "reason"):
                    ep[key] = ""
            data["Attr"].sort(key=lambda e: (e["hostName"], e["name"]))
        out[path] = data
    return out


def check_traffic(d: DaemonHandle) -> None:
    assert sorted(b for b, _ in http_answers(d.topo.client, ROUTED_VIP, 3)) == [
        "be1", "be2", "be3"]
    # the firewall's drop rule is there too: the UDP service is unreachable
    assert udp_answers(d.topo.client, ROUTED_VIP, 1) == ["ERR"]


def test_save_apply_and_import_to_a_fresh_daemon(fresh: LbTopology) -> None:
    conf = os.path.join(fresh.tmp.name, "loxilb-conf")
    a = DaemonHandle(fresh, "xp-a")
    a.start()
    try:
        a.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={EPS}", "--name=web",
              "--inatimeout=300")
        a.cli("create", "lb", ROUTED_VIP, "--udp=5353:5353", f"--endpoints={EPS}",
              "--select=hash")
        a.cli("create", "firewall", f"--firewallRule={DROP_UDP}", "--drop")
        a.cli("create", "endpoint", backend_ip(1), "--name=be1-http", "--probetype=http",
              "--probeport=80", "--period=30", "--retries=3")
        check_traffic(a)
        saved = a.cli("save", "-a", "-c", conf)
        assert "LB Configuration saved in" in saved.stdout, saved.stdout
        before = listings(a)
        exported = a.api("GET", "/config/export")
        assert exported.status_code == 200, exported.text
    finally:
        a.stop()
    assert {"lbconfig.txt", "FWconfig.txt", "EPconfig.txt"} <= set(os.listdir(conf))
    detach(fresh)

    b = DaemonHandle(fresh, "xp-b")
    b.start()
    try:
        assert b.api("GET", "/config/loadbalancer/all").json().get("lbAttr", []) == []
        b.cli("apply", "--lb", f"{conf}/lbconfig.txt", "--full",
              "--firewall", f"{conf}/FWconfig.txt", "--endpoint", f"{conf}/EPconfig.txt")
        assert listings(b) == before
        check_traffic(b)
        # the interfaces' saved addresses are the lab's, there already: no failure
        assert "10.0.1.1/24" in Path(conf, "ipconfig", "eth0", "ipv4addr").read_text()
        b.cli("apply", "--per-intf", "eth0", "-c", f"{conf}/ipconfig/")

        # the export file, imported into an emptied daemon
        b.cli("delete", "lb", "--all")
        b.cli("delete", "firewall", f"--firewallRule={DROP_UDP}")
        assert listings(b)["/config/loadbalancer/all"].get("lbAttr", []) == []
        r = b.api("POST", "/config/import", raw=exported.text.encode())
        assert r.status_code == 200, r.text
        assert listings(b) == before
        check_traffic(b)
    finally:
        b.stop()
