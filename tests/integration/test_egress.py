"""Egress SNAT with the real daemon and real traffic: a "pod" (backend 1's namespace, whose
default route is the LB) reaches an "outside" server (backend 2's nginx, which answers with the
address it saw) through a firewall doSnat rule: the server sees toIP, the pod gets the answer.
With --egress (onDefault) the translation follows the HA state: cistate BACKUP stops it (the
server sees the pod's own address again), MASTER brings it back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pyloxi.testing.lab.topology import backend_ip
from tests.waiting import wait_until

from .conftest import DaemonHandle
from .traffic import http_answers, udp_answers

TO_IP = "20.0.0.200"  # routed to the LB by the server's default route
RULE = "sourceIP:10.0.11.0/24,preference:50"  # backend 1's subnet: the pods
POD_IP, SERVER = backend_ip(1), backend_ip(2)


@pytest.fixture
def egress(lb: DaemonHandle) -> Iterator[DaemonHandle]:
    yield lb
    lb.cli("delete", "firewall", f"--firewallRule={RULE}", check=False)
    set_state(lb, "MASTER")


def set_state(d: DaemonHandle, state: str) -> None:
    r = d.api("POST", "/config/cistate",
              {"instance": "llb-inst0", "state": state, "vip": "0.0.0.0"})
    assert r.status_code == 200, r.text


def seen_by_server(d: DaemonHandle, n: int = 2) -> list[tuple[str, str]]:
    return http_answers(d.topo.backends[0], SERVER, n)


def to_ip_local(d: DaemonHandle) -> bool:
    out = d.topo.lb.run(["ip", "route", "show", "table", "local", TO_IP], check=False).stdout
    return TO_IP in out


def flows(d: DaemonHandle) -> list[dict[str, Any]]:
    r = d.api("GET", "/config/conntrack/all")
    assert r.status_code == 200, r.text
    return [f for f in r.json()["ctAttr"] if f["sourceIP"] == POD_IP]


def test_pod_egress_is_translated_and_follows_the_ha_state(egress: DaemonHandle) -> None:
    # no rule: the kernel forwards the pod's connection with its own address
    assert seen_by_server(egress) == [("be2", POD_IP)] * 2

    egress.cli("create", "firewall", f"--firewallRule={RULE}", f"--snat={TO_IP}", "--egress")
    assert seen_by_server(egress, 3) == [("be2", TO_IP)] * 3
    # the SNAT address is this node's while it is not BACKUP (made local like a VIP)
    wait_until(lambda: to_ip_local(egress), 10, what="toIP local on the MASTER")
    # UDP and ICMP echo too; the flows list as the hidden rule loxilb would make
    assert udp_answers(egress.topo.backends[0], SERVER, 2) == ["be2", "be2"]
    ping = egress.topo.backends[0].run(["ping", "-c", "1", "-W", "3", SERVER], check=False)
    assert ping.returncode == 0, ping.stdout
    got = flows(egress)
    assert {f["protocol"] for f in got} >= {"tcp", "udp", "icmp"}
    assert all(f["servName"] == f"snat:{TO_IP}:0" for f in got)
    assert all(f["conntrackAct"].startswith(f"snat-{TO_IP}:") for f in got)
    [rule] = egress.api("GET", "/config/firewall/all").json()["fwAttr"]
    assert rule["opts"]["doSnat"] and rule["opts"]["onDefault"]
    assert int(rule["opts"]["counter"].split(":")[0]) >= 6  # each flow's first packet

    # BACKUP: the egress rule is withdrawn, new connections are no longer translated
    set_state(egress, "BACKUP")
    assert seen_by_server(egress) == [("be2", POD_IP)] * 2
    wait_until(lambda: not to_ip_local(egress), 10, what="toIP gone on the BACKUP")
    # MASTER: translated again
    set_state(egress, "MASTER")
    assert seen_by_server(egress) == [("be2", TO_IP)] * 2
    wait_until(lambda: to_ip_local(egress), 10, what="toIP back on the MASTER")
    # deleted: the address goes with the rule
    egress.cli("delete", "firewall", f"--firewallRule={RULE}")
    wait_until(lambda: not to_ip_local(egress), 10, what="toIP gone with its rule")
    assert seen_by_server(egress) == [("be2", POD_IP)] * 2


def test_plain_snat_ignores_the_ha_state_and_survives_a_restart(egress: DaemonHandle) -> None:
    egress.cli("create", "firewall", f"--firewallRule={RULE}", f"--snat={TO_IP}")
    set_state(egress, "BACKUP")
    assert seen_by_server(egress) == [("be2", TO_IP)] * 2   # not onDefault: always on
    assert not to_ip_local(egress)   # and its address is the operator's to route
    egress.restart()
    assert seen_by_server(egress) == [("be2", TO_IP)] * 2


def test_refusals_are_400(egress: DaemonHandle) -> None:
    r = egress.api("POST", "/config/firewall", {"ruleArguments": {"sourceIP": "10.0.11.0/24"},
                                                "opts": {"doSnat": True, "fwMark": 5,
                                                         "toIP": TO_IP}})
    assert r.status_code == 400 and "fwMark" in r.text
    r = egress.api("POST", "/config/loadbalancer", {
        "serviceArguments": {"externalIP": "0.0.0.0", "port": 9999, "protocol": "tcp",
                             "egress": True},
        "endpoints": [{"endpointIP": SERVER, "targetPort": 1}]})
    assert r.status_code == 400 and "egress" in r.text
    assert egress.api("GET", "/config/firewall/all").json()["fwAttr"] == []
