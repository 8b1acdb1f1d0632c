"""/config/firewall over the API with the in-memory datapath: what the datapath is given
(order, ranges, actions), loxilb's error answers, and bad rules refused with nothing changed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pyloxi.api import create_app
from pyloxi.api.firewall import firewall_router
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine.firewall import Firewall
from pyloxi.model.errors import PyloxiError
from pyloxi.model.firewall import FirewallEntry, FirewallRuleEntry
from pyloxi.store import load_firewall, save_firewall

URL = "/netlox/v1/config/firewall"


@pytest.fixture
def dp() -> MemoryDatapath:
    return MemoryDatapath()


@pytest.fixture
def http(dp: MemoryDatapath) -> Iterator[TestClient]:
    app = create_app(object(), version="0", extra_routers=[firewall_router(Firewall(dp))])
    with TestClient(app) as client:
        yield client


def fw(args: dict[str, Any], **opts: Any) -> dict[str, Any]:
    return {"ruleArguments": args, "opts": opts}


def test_create_list_delete(http: TestClient, dp: MemoryDatapath) -> None:
    r = http.post(URL, json=fw({"sourceIP": "10.0.0.0/8", "preference": 100}, drop=True))
    assert r.status_code == 200, r.text
    r = http.post(URL, json=fw({"sourceIP": "10.1.2.3/32", "destinationIP": "20.0.0.1/32",
                                "minDestinationPort": 80, "maxDestinationPort": 90,
                                "protocol": 6, "preference": 200}, allow=True, fwMark=7))
    assert r.status_code == 200, r.text
    # highest preference first
    assert [(p.src, p.allow, p.mark, p.dport, p.proto) for p in dp.firewall] == [
        ("10.1.2.3/32", True, 7, (80, 90), 6), ("10.0.0.0/8", False, 0, (0, 65535), 0)]
    dp.fw_counters[dp.firewall[1].id] = (3, 180)
    got = http.get(f"{URL}/all").json()["fwAttr"]
    assert [e["ruleArguments"]["preference"] for e in got] == [200, 100]
    assert got[1]["opts"]["counter"] == "3:180" and got[1]["opts"]["drop"] is True
    assert got[0]["opts"]["fwMark"] == 7
    r = http.delete(URL, params={"sourceIP": "10.0.0.0/8", "preference": 100})
    assert r.status_code == 200, r.text
    assert [p.src for p in dp.firewall] == ["10.1.2.3/32"]
    r = http.delete(URL, params={"sourceIP": "10.0.0.0/8", "preference": 100})
    assert r.status_code == 404


def test_same_rule_twice_is_409(http: TestClient) -> None:
    body = fw({"sourceIP": "10.0.0.0/8"}, drop=True)
    assert http.post(URL, json=body).status_code == 200
    r = http.post(URL, json=body)
    assert r.status_code == 409 and "fwrule-exists" in r.text


def test_no_action_is_drop(http: TestClient, dp: MemoryDatapath) -> None:
    assert http.post(URL, json=fw({"sourceIP": "10.0.0.0/8"})).status_code == 200
    assert dp.firewall[0].allow is False


@pytest.mark.parametrize("body,why", [
    (fw({"sourceIP": "10.0.0.300/8"}, drop=True), "not an IP prefix"),
    (fw({"destinationIP": "nonsense"}, drop=True), "not an IP prefix"),
    (fw({"minSourcePort": 90, "maxSourcePort": 80, "protocol": 6}, drop=True), "min 90 > max 80"),
    (fw({"minDestinationPort": 70000, "protocol": 6}, drop=True), "65535"),
    (fw({"minDestinationPort": 80}, drop=True), "need protocol"),
    (fw({"protocol": 300}, drop=True), "255"),
    (fw({"sourceIP": "10.0.0.0/8", "destinationIP": "2001:db8::/32"}, drop=True), "families"),
    (fw({"sourceIP": "10.0.0.0/8"}, allow=True, drop=True), "exclusive"),
    (fw({"sourceIP": "10.0.0.0/8"}, drop=True, fwMark=3), "fwMark needs the allow"),
    (fw({"sourceIP": "10.0.0.0/8"}, doSnat=True), "doSnat needs toIP"),
    (fw({"sourceIP": "10.0.0.0/8"}, doSnat=True, toIP="1.2.3"), "not an IP address"),
    (fw({"sourceIP": "10.0.0.0/8"}, doSnat=True, toIP="0.0.0.0"), "cannot be a source"),
    (fw({"sourceIP": "10.0.0.0/8"}, doSnat=True, toIP="2001:db8::1"), "family"),
    (fw({"sourceIP": "10.0.0.0/8"}, doSnat=True, toIP="1.2.3.4", fwMark=3),
     "fwMark not allowed together with doSnat"),
    (fw({"sourceIP": "10.0.0.0/8"}, doSnat=True, toIP="1.2.3.4", allow=True),
     "action of its own"),
    (fw({"sourceIP": "10.0.0.0/8", "protocol": 1}, doSnat=True, toIP="1.2.3.4", toPort=80),
     "toPort needs protocol"),
    (fw({"sourceIP": "10.0.0.0/8"}, onDefault=True, allow=True), "onDefault (--egress) needs"),
    (fw({"sourceIP": "10.0.0.0/8"}, toIP="1.2.3.4"), "toIP and toPort need doSnat"),
    (fw({"sourceIP": "10.0.0.0/8"}, allow=True, record=True),
     "record (packet tracing) is not supported"),
    (fw({"sourceIP": "10.0.0.0/8"}, trap=True, drop=True), "trap is an action of its own"),
    (fw({"sourceIP": "10.0.0.0/8"}, trap=True, fwMark=3), "fwMark needs the allow"),
    (fw({"sourceIP": "10.0.0.0/8"}, redirect=True, redirectPortName="eth1", allow=True),
     "redirect is an action of its own"),
    (fw({"sourceIP": "10.0.0.0/8"}, redirect=True, trap=True, redirectPortName="eth1"),
     "action of its own"),
    (fw({"sourceIP": "10.0.0.0/8"}, redirect=True), "redirect needs redirectPortName"),
    (fw({"sourceIP": "10.0.0.0/8"}, redirectPortName="eth1"), "redirectPortName needs redirect"),
    ({"opts": {"drop": True}}, "ruleArguments"),
])
def test_bad_rules_are_400_and_change_nothing(http: TestClient, dp: MemoryDatapath,
                                              body: dict[str, Any], why: str) -> None:
    assert http.post(URL, json=fw({"sourceIP": "192.0.2.0/24"}, allow=True)).status_code == 200
    before = list(dp.firewall)
    r = http.post(URL, json=body)
    assert r.status_code == 400, r.text
    assert why in r.text
    assert dp.firewall == before
    assert len(http.get(f"{URL}/all").json()["fwAttr"]) == 1


def test_datapath_refusal_is_400_and_undone(http: TestClient, dp: MemoryDatapath) -> None:
    dp.fail_next = ValueError("no interface named 'nope0'")
    r = http.post(URL, json=fw({"portName": "nope0"}, drop=True))
    assert r.status_code == 400 and "nope0" in r.text
    assert http.get(f"{URL}/all").json()["fwAttr"] == []


def test_bad_delete_query_is_400(http: TestClient) -> None:
    r = http.delete(URL, params={"sourceIP": "10.0.0.0/8", "preference": "x"})
    assert r.status_code == 400


def test_saved_on_every_change_and_restored(tmp_path: Path) -> None:
    path = tmp_path / "firewall.json"
    dp = MemoryDatapath()
    fw_table = Firewall(dp, save=lambda rules: save_firewall(path, rules))
    fw_table.add(FirewallEntry.model_validate(fw({"sourceIP": "10.0.0.0/8", "preference": 1})))
    fw_table.add(FirewallEntry.model_validate(
        fw({"sourceIP": "10.1.0.0/16", "preference": 9}, allow=True, fwMark=5)))
    saved = load_firewall(path)
    assert [e.rule_arguments.preference for e in saved] == [9, 1]
    # a new daemon: the same rules, in the same order, on a fresh datapath
    dp2 = MemoryDatapath()
    again = Firewall(dp2, saved=saved)
    assert [(p.src, p.allow, p.mark) for p in dp2.firewall] == [
        ("10.1.0.0/16", True, 5), ("10.0.0.0/8", False, 0)]
    assert [e.wire() for e in again.list()] == [e.wire() for e in fw_table.list()]
    fw_table.delete(FirewallRuleEntry.model_validate({"sourceIP": "10.0.0.0/8",
                                                      "preference": 1}))
    assert [e.rule_arguments.preference for e in load_firewall(path)] == [9]


def test_a_saved_rule_that_no_longer_installs_is_left_out() -> None:
    dp = MemoryDatapath()
    good = FirewallEntry.model_validate(fw({"sourceIP": "10.0.0.0/8"}))
    bad = FirewallEntry.model_validate(fw({"sourceIP": "10.1.0.0/16"}, record=True))
    table = Firewall(dp, saved=[bad, good])
    assert [p.src for p in dp.firewall] == ["10.0.0.0/8"] and len(table.list()) == 1


def test_unreadable_file_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "firewall.json"
    assert load_firewall(path) == []
    path.write_text("{not json")
    assert load_firewall(path) == []
    path.write_text('{"fwAttr": [{"ruleArguments": {"sourceIP": "x"}, "opts": {}}, '
                    '{"ruleArguments": {"sourceIP": "10.0.0.0/8"}, "opts": {"drop": true}}]}')
    assert [e.rule_arguments.source_ip for e in load_firewall(path)] == ["10.0.0.0/8"]


def test_save_failure_is_500_and_undone() -> None:
    dp = MemoryDatapath()

    def broken(_rules: list[FirewallEntry]) -> None:
        raise OSError("disk full")

    table = Firewall(dp, save=broken)
    with pytest.raises(PyloxiError) as exc:
        table.add(FirewallEntry.model_validate(fw({"sourceIP": "10.0.0.0/8"})))
    assert exc.value.code == 500 and "disk full" in exc.value.message
    assert dp.firewall == [] and table.list() == []


class _NoGone(MemoryDatapath):
    """A datapath where interface gone0 does not exist (as the eBPF one: ValueError)."""

    def set_firewall(self, rules: Any) -> None:
        if any(r.ifname == "gone0" for r in rules):
            raise ValueError("no interface named 'gone0'")
        super().set_firewall(rules)


def test_restore_is_one_swap_and_skips_a_rule_the_datapath_refuses() -> None:
    a = FirewallEntry.model_validate(fw({"sourceIP": "10.0.0.0/8", "preference": 5}))
    b = FirewallEntry.model_validate(fw({"portName": "gone0", "preference": 4}))
    c = FirewallEntry.model_validate(fw({"sourceIP": "10.1.0.0/16", "preference": 3},
                                        allow=True))
    dp = MemoryDatapath()
    Firewall(dp, saved=[a, c])
    assert len(dp.firewall) == 2
    dp2 = _NoGone()
    table = Firewall(dp2, saved=[a, b, c])
    assert [p.src for p in dp2.firewall] == ["10.0.0.0/8", "10.1.0.0/16"]
    assert [e.rule_arguments.preference for e in table.list()] == [5, 3]


def test_snat_rule_reaches_the_datapath_and_lists(http: TestClient, dp: MemoryDatapath) -> None:
    r = http.post(URL, json=fw({"sourceIP": "10.0.0.0/24", "preference": 10}, doSnat=True,
                               toIP="192.0.2.10", toPort=3030))
    assert r.status_code == 200, r.text
    [p] = dp.firewall
    assert (p.src, p.snat_ip, p.snat_port, p.allow) == ("10.0.0.0/24", "192.0.2.10", 3030, False)
    [e] = http.get(f"{URL}/all").json()["fwAttr"]
    assert e["opts"]["doSnat"] is True and e["opts"]["drop"] is False
    assert (e["opts"]["toIP"], e["opts"]["toPort"]) == ("192.0.2.10", 3030)
    # IPv6: toIP of the rule's family
    r = http.post(URL, json=fw({"sourceIP": "2001:db8::/64"}, doSnat=True, toIP="2001:db8:1::9"))
    assert r.status_code == 200, r.text


def test_on_default_rules_follow_the_ha_state() -> None:
    dp = MemoryDatapath()
    changes: list[set[str]] = []
    table = Firewall(dp, backup=True,  # a BACKUP starting
                     on_change=lambda: changes.append(table.local_ips()))
    table.add(FirewallEntry.model_validate(fw({"sourceIP": "10.0.0.0/24", "preference": 2},
                                              doSnat=True, toIP="192.0.2.10", onDefault=True)))
    table.add(FirewallEntry.model_validate(fw({"sourceIP": "10.0.1.0/24", "preference": 1},
                                              doSnat=True, toIP="192.0.2.11")))
    # BACKUP: the egress rule is kept (listed) but not in the datapath; the plain SNAT is
    assert [p.snat_ip for p in dp.firewall] == ["192.0.2.11"]
    assert len(table.list()) == 2
    table.set_backup(False)  # MASTER
    assert [p.snat_ip for p in dp.firewall] == ["192.0.2.10", "192.0.2.11"]
    table.set_backup(True)
    assert [p.snat_ip for p in dp.firewall] == ["192.0.2.11"]
    # the egress SNAT address is this node's only while not BACKUP (plain SNAT's: never)
    assert changes == [set(), {"192.0.2.10"}, set()]


def test_egress_rules_over_cistate(dp: MemoryDatapath) -> None:
    """The daemon's wiring in small: cistate changes reach Firewall.set_backup."""
    from pyloxi.api.cistate import cistate_router
    from pyloxi.cluster.state import ClusterState
    from pyloxi.model.cluster import DEFAULT_INSTANCE

    cluster = ClusterState()
    table = Firewall(dp)
    cluster.subscribe(lambda _b, _a: table.set_backup(
        cluster.instance(DEFAULT_INSTANCE).state == "BACKUP"))
    app = create_app(object(), version="0",
                     extra_routers=[firewall_router(table), cistate_router(cluster)])
    with TestClient(app) as client:
        r = client.post(URL, json=fw({"sourceIP": "10.0.0.0/24"}, doSnat=True,
                                     toIP="192.0.2.10", onDefault=True))
        assert r.status_code == 200, r.text
        assert len(dp.firewall) == 1  # NOT_DEFINED: not BACKUP, active
        body = {"instance": DEFAULT_INSTANCE, "state": "BACKUP", "vip": "0.0.0.0"}
        assert client.post("/netlox/v1/config/cistate", json=body).status_code == 200
        assert dp.firewall == []
        body["state"] = "MASTER"
        assert client.post("/netlox/v1/config/cistate", json=body).status_code == 200
        assert [p.snat_ip for p in dp.firewall] == ["192.0.2.10"]


def test_trap_and_redirect_reach_the_datapath_and_list(http: TestClient,
                                                       dp: MemoryDatapath) -> None:
    dp.interfaces = frozenset({"eth0", "eth1"})
    r = http.post(URL, json=fw({"sourceIP": "10.0.0.0/8", "preference": 2}, trap=True))
    assert r.status_code == 200, r.text
    r = http.post(URL, json=fw({"sourceIP": "10.1.0.0/16", "preference": 3}, redirect=True,
                               redirectPortName="eth1"))
    assert r.status_code == 200, r.text
    assert [(p.src, p.trap, p.redirect, p.allow, p.snat_ip) for p in dp.firewall] == [
        ("10.1.0.0/16", False, "eth1", False, ""), ("10.0.0.0/8", True, "", False, "")]
    got = [e["opts"] for e in http.get(f"{URL}/all").json()["fwAttr"]]
    assert [(o["redirect"], o["redirectPortName"], o["trap"], o["drop"]) for o in got] == [
        (True, "eth1", False, False), (False, "", True, False)]


def test_redirect_to_an_unknown_interface_is_400_and_changes_nothing(
        http: TestClient, dp: MemoryDatapath) -> None:
    dp.interfaces = frozenset({"eth0", "eth1"})
    assert http.post(URL, json=fw({"sourceIP": "192.0.2.0/24"}, allow=True)).status_code == 200
    before = list(dp.firewall)
    r = http.post(URL, json=fw({"sourceIP": "10.0.0.0/8"}, redirect=True,
                               redirectPortName="nope0"))
    assert r.status_code == 400 and "no interface named 'nope0'" in r.text, r.text
    assert dp.firewall == before
    assert len(http.get(f"{URL}/all").json()["fwAttr"]) == 1
