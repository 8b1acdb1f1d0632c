"""Firewall with the real daemon and real traffic: a drop rule blocks the client's connections
to a VIP, an allow rule of higher preference lets them through again, deleting the rules
restores the service; each rule's counter in GET /config/firewall/all; the rules survive a
restart; a mark steers to the LB rule of that block."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pyloxi.testing.lab.topology import CLIENT_IP, ROUTED_VIP, backend_ip

from .conftest import DaemonHandle
from .traffic import http_answers

DROP = f"sourceIP:{CLIENT_IP}/32,destinationIP:{ROUTED_VIP}/32,preference:100"
ALLOW = (f"sourceIP:{CLIENT_IP}/32,destinationIP:{ROUTED_VIP}/32,minDestinationPort:80,"
         "protocol:6,preference:200")


@pytest.fixture
def fw(lb: DaemonHandle) -> Iterator[DaemonHandle]:
    yield lb
    for rule in (DROP, ALLOW):
        lb.cli("delete", "firewall", f"--firewallRule={rule}", check=False)


def rules(d: DaemonHandle) -> dict[int, dict[str, Any]]:
    r = d.api("GET", "/config/firewall/all")
    assert r.status_code == 200, r.text
    return {e["ruleArguments"]["preference"]: e for e in r.json()["fwAttr"]}


def packets(entry: dict[str, Any]) -> int:
    return int(entry["opts"]["counter"].split(":")[0])


def served(d: DaemonHandle, n: int) -> list[str]:
    return [b for b, _ in http_answers(d.topo.client, ROUTED_VIP, n)]


def test_drop_allow_by_preference_and_delete(fw: DaemonHandle) -> None:
    eps = ",".join(f"{backend_ip(i)}:1" for i in (1, 2, 3))
    fw.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={eps}")
    assert sorted(served(fw, 3)) == ["be1", "be2", "be3"]

    fw.cli("create", "firewall", f"--firewallRule={DROP}", "--drop")
    assert served(fw, 2) == ["ERR", "ERR"]  # the SYNs never reach a backend
    got = rules(fw)
    assert packets(got[100]) >= 2 and got[100]["opts"]["drop"] is True

    # the same rule again: loxilb's 409
    again = fw.cli("create", "firewall", f"--firewallRule={DROP}", "--drop", check=False)
    assert again.returncode != 0 and "fwrule-exists" in again.stderr

    # an allow rule of higher preference wins over the drop rule
    fw.cli("create", "firewall", f"--firewallRule={ALLOW}", "--allow")
    assert sorted(served(fw, 3)) == ["be1", "be2", "be3"]
    got = rules(fw)
    assert packets(got[200]) >= 3  # each connection's first packet (replies: conntrack)
    dropped = packets(got[100])

    fw.cli("delete", "firewall", f"--firewallRule={ALLOW}")
    assert served(fw, 1) == ["ERR"]
    assert packets(rules(fw)[100]) > dropped

    fw.cli("delete", "firewall", f"--firewallRule={DROP}")
    assert rules(fw) == {}
    assert sorted(served(fw, 3)) == ["be1", "be2", "be3"]


def test_bad_rule_is_400_and_changes_nothing(fw: DaemonHandle) -> None:
    r = fw.api("POST", "/config/firewall", {"ruleArguments": {"sourceIP": "10.0.0.0/33"},
                                            "opts": {"drop": True}})
    assert r.status_code == 400 and "prefix" in r.text
    r = fw.api("POST", "/config/firewall", {"ruleArguments": {"portName": "nosuch0"},
                                            "opts": {"drop": True}})
    assert r.status_code == 400 and "nosuch0" in r.text
    assert rules(fw) == {}


def test_rules_survive_a_daemon_restart(fw: DaemonHandle) -> None:
    eps = ",".join(f"{backend_ip(i)}:1" for i in (1, 2, 3))
    fw.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={eps}")
    fw.cli("create", "firewall", f"--firewallRule={DROP}", "--drop")
    fw.restart()
    assert list(rules(fw)) == [100]
    assert served(fw, 1) == ["ERR"]
    assert packets(rules(fw)[100]) >= 1


def test_a_mark_steers_the_client_to_the_rule_of_that_block(fw: DaemonHandle) -> None:
    """loxilb's fwMark with an LB rule's block (`--mark`): the marked client's connections go
    to the block's endpoints, everyone else's to the rule without a block."""
    fw.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={backend_ip(1)}:1")
    fw.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={backend_ip(2)}:1",
           "--mark=10")
    assert served(fw, 2) == ["be1", "be1"]
    fw.cli("create", "firewall", f"--firewallRule={ALLOW}", "--allow", "--setmark=10")
    assert served(fw, 2) == ["be2", "be2"]
    fw.cli("delete", "firewall", f"--firewallRule={ALLOW}")
    assert served(fw, 1) == ["be1"]
    # each rule keeps its own datapath entry: deleting the blocked one leaves the other
    fw.cli("delete", "lb", ROUTED_VIP, "--tcp=80", "--mark=10")
    assert served(fw, 1) == ["be1"]
