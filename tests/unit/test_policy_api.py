"""/config/policy over the API with the in-memory datapath: what the datapath is given (rates
in bytes/s, burst defaults, targets), loxilb's answers (409 pol-exists, replace on other info),
bad policers refused with nothing changed, persistence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pyloxi.api import create_app
from pyloxi.api.policy import policy_router
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine.policer import Policers
from pyloxi.model.errors import PyloxiError
from pyloxi.model.policy import PolicyEntry
from pyloxi.store import load_policies, save_policies

URL = "/netlox/v1/config/policy"


@pytest.fixture
def dp() -> MemoryDatapath:
    return MemoryDatapath()


@pytest.fixture
def http(dp: MemoryDatapath) -> Iterator[TestClient]:
    app = create_app(object(), version="0", extra_routers=[policy_router(Policers(dp))])
    with TestClient(app) as client:
        yield client


def pol(ident: str = "pol-eth0", *, target: str = "eth0", attachment: int = 1,
        **info: Any) -> dict[str, Any]:
    body = {"type": 0, "colorAware": False, "peakInfoRate": 100, "committedInfoRate": 100}
    body.update(info)
    return {"policyIdent": ident, "policyInfo": body,
            "targetObject": {"attachment": attachment, "polObjName": target}}


def test_create_list_delete(http: TestClient, dp: MemoryDatapath) -> None:
    r = http.post(URL, json=pol())
    assert r.status_code == 200, r.text
    r = http.post(URL, json=pol("pol-web", target="web", attachment=2, type=1,
                                committedInfoRate=50, peakInfoRate=50, committedBlkSize=60000,
                                excessBlkSize=7))
    assert r.status_code == 200, r.text
    a, b = sorted(dp.policers.values(), key=lambda p: p.id)
    # 100 Mbit/s = 12,500,000 bytes/s; CBS 0: 100 ms of it; EBS always 2 x CBS
    assert (a.srtcm, a.cir, a.pir, a.cbs, a.ebs, a.port, a.rule) == (
        False, 12_500_000, 12_500_000, 1_250_000, 2_500_000, "eth0", "")
    assert (b.srtcm, b.cir, b.cbs, b.ebs, b.port, b.rule) == (
        True, 6_250_000, 60_000, 120_000, "", "web")
    dp.pol_counters[a.id] = (10, 15000, 3, 4500)
    got = {e["policyIdent"]: e for e in http.get(f"{URL}/all").json()["polAttr"]}
    assert got["pol-eth0"]["policyInfo"]["committedBlkSize"] == 1_250_000
    assert got["pol-eth0"]["policyInfo"]["excessBlkSize"] == 2_500_000
    assert got["pol-eth0"]["stats"] == {"packetsOK": 10, "bytesOK": 15000,
                                        "packetsDropped": 3, "bytesDropped": 4500}
    assert got["pol-web"]["targetObject"] == {"attachment": 2, "polObjName": "web"}
    assert http.delete(f"{URL}/ident/pol-eth0").status_code == 200
    assert [p.rule for p in dp.policers.values()] == ["web"]
    r = http.delete(f"{URL}/ident/pol-eth0")
    assert r.status_code == 404, r.text


def test_same_info_409_other_info_replaces(http: TestClient, dp: MemoryDatapath) -> None:
    assert http.post(URL, json=pol()).status_code == 200
    r = http.post(URL, json=pol())
    assert r.status_code == 409 and "pol-exists" in r.text
    # the default CBS written out (as GET shows it) is the same info too
    r = http.post(URL, json=pol(committedBlkSize=1_250_000, excessBlkSize=2_500_000))
    assert r.status_code == 409
    (old,) = dp.policers.values()
    assert http.post(URL, json=pol(committedInfoRate=50)).status_code == 200
    (new,) = dp.policers.values()
    assert new.id == old.id and new.cir == 6_250_000 and new.pir == 12_500_000
    # moved to another target
    assert http.post(URL, json=pol(target="eth1")).status_code == 200
    assert [p.port for p in dp.policers.values()] == ["eth1"]


@pytest.mark.parametrize(("body", "words"), [
    (pol(committedInfoRate=7), "committedInfoRate 7"),
    (pol(peakInfoRate=0), "peakInfoRate 0"),
    (pol(peakInfoRate=50), "below committedInfoRate"),
    (pol(type=2), "type 2"),
    (pol(committedBlkSize=1000), "committedBlkSize 1000"),
    (pol(attachment=0), "attachment 0"),
    (pol(attachment=5), "attachment 5"),
    (pol(target="web", attachment=3), "expected IP or IP:PORT"),
    (pol(target="10.0.0.1:0", attachment=3), "expected IP or IP:PORT"),
    (pol(target="10.0.0.1:70000", attachment=3), "expected IP or IP:PORT"),
    (pol(target="10.0.0.300:80", attachment=3), "not an IP address"),
    (pol(target="2001:db8::1:80:x", attachment=3), "expected IP or IP:PORT"),
    (pol(target="10.0.0.1:80", attachment=4), "not an IP address"),
    (pol(target="10.0.0.0/24", attachment=4), "not an IP address"),
    (pol(target=""), "polObjName"),
    (pol(target="eth9"), "not one the datapath is attached to"),
    (pol(""), "policyIdent"),
    ({"policyIdent": "x"}, "targetObject"),
    (pol(committedInfoRate="100"), "committedInfoRate"),
])
def test_bad_policers_are_400_and_change_nothing(http: TestClient, dp: MemoryDatapath,
                                                 body: dict[str, Any], words: str) -> None:
    assert http.post(URL, json=pol("keep", target="eth1")).status_code == 200
    before = dict(dp.policers)
    r = http.post(URL, json=body)
    assert r.status_code == 400, r.text
    assert words in r.text
    assert dp.policers == before
    assert [e["policyIdent"] for e in http.get(f"{URL}/all").json()["polAttr"]] == ["keep"]


def test_a_target_takes_one_policer(http: TestClient) -> None:
    assert http.post(URL, json=pol("a")).status_code == 200
    r = http.post(URL, json=pol("b"))
    assert r.status_code == 409 and "already has policer 'a'" in r.text
    # a port and a rule of the same name are different targets
    assert http.post(URL, json=pol("c", attachment=2)).status_code == 200


def test_endpoint_and_client_targets(http: TestClient, dp: MemoryDatapath) -> None:
    """pyloxi extensions: 3 an endpoint ("IP", any port, or "IP:PORT"), 4 a client ("IP")."""
    for ident, target, attachment in (("ep", "10.0.0.1:8080", 3), ("ep-any", "10.0.0.1", 3),
                                      ("ep6", "[2001:DB8::1]:80", 3), ("cl", "10.0.1.2", 4),
                                      ("cl6", "2001:db8::0:2", 4)):
        r = http.post(URL, json=pol(ident, target=target, attachment=attachment))
        assert r.status_code == 200, r.text
    got = {(p.ep_ip, p.ep_port, p.client, p.port, p.rule) for p in dp.policers.values()}
    assert got == {("10.0.0.1", 8080, "", "", ""), ("10.0.0.1", 0, "", "", ""),
                   ("2001:db8::1", 80, "", "", ""), ("", 0, "10.0.1.2", "", ""),
                   ("", 0, "2001:db8::2", "", "")}
    listed = {e["policyIdent"]: e["targetObject"]
              for e in http.get(f"{URL}/all").json()["polAttr"]}
    assert listed["ep"] == {"attachment": 3, "polObjName": "10.0.0.1:8080"}
    # one address spelled two ways is one target
    r = http.post(URL, json=pol("cl-again", target="2001:DB8::2", attachment=4))
    assert r.status_code == 409 and "already has policer 'cl6'" in r.text
    # a client and an endpoint of the same address are different targets
    assert http.post(URL, json=pol("x", target="10.0.1.2", attachment=3)).status_code == 200


def test_rule_target_may_not_exist_yet(http: TestClient, dp: MemoryDatapath) -> None:
    """Attached by name: the datapath attaches it when a rule of that name appears."""
    assert http.post(URL, json=pol(target="no-such-rule", attachment=2)).status_code == 200
    assert [p.rule for p in dp.policers.values()] == ["no-such-rule"]


def test_saved_on_every_change_and_restored(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    dp = MemoryDatapath()
    table = Policers(dp, save=lambda pols: save_policies(path, pols))
    table.add(PolicyEntry.model_validate(pol()))
    table.add(PolicyEntry.model_validate(pol("r", target="web", attachment=2)))
    table.delete("pol-eth0")
    again = MemoryDatapath()
    restored = Policers(again, saved=load_policies(path))
    assert [p.policy_ident for p in restored.list()] == ["r"]
    assert [(p.rule, p.cbs) for p in again.policers.values()] == [("web", 1_250_000)]


def test_unreadable_file_and_bad_entries(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text("{not json")
    assert load_policies(path) == []
    path.write_text('{"polAttr": [{"policyIdent": 5}, ' +
                    '{"policyIdent": "ok", "targetObject": {"attachment": 1, '
                    '"polObjName": "eth0"}}]}')
    assert [p.policy_ident for p in load_policies(path)] == ["ok"]
    # restored with an interface that is gone: left out, the daemon starts
    dp = MemoryDatapath(attached=("eth1",))
    assert Policers(dp, saved=load_policies(path)).list() == []


def test_save_failure_is_500_and_undone() -> None:
    dp = MemoryDatapath()

    def broken(_pols: list[PolicyEntry]) -> None:
        raise OSError("disk full")

    table = Policers(dp, save=broken)
    with pytest.raises(PyloxiError) as exc:
        table.add(PolicyEntry.model_validate(pol()))
    assert exc.value.code == 500 and "disk full" in exc.value.message
    assert dp.policers == {} and table.list() == []


def test_policer_counters_in_metrics() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from pyloxi.engine.engine import Engine
    from pyloxi.metrics import MetricsExporter, Sources

    dp = MemoryDatapath()
    table = Policers(dp)
    table.add(PolicyEntry.model_validate(pol()))
    dp.pol_counters[1] = (10, 15000, 3, 4500)
    dp.stats = {"policer_drop": 3}
    engine = Engine(dp)
    exporter = MetricsExporter(Sources(rules=engine.rule_table, counters=dp.services_counters,
                                       datapath_stats=dp.datapath_stats,
                                       policers=table.list), enabled=True)
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for fam in text_string_to_metric_families(exporter.render().decode())
           for s in fam.samples}
    pol_ok = (("policy", "pol-eth0"), ("result", "ok"))
    pol_dropped = (("policy", "pol-eth0"), ("result", "dropped"))
    assert got[("pyloxi_policer_packets_total", pol_ok)] == 10
    assert got[("pyloxi_policer_packets_total", pol_dropped)] == 3
    assert got[("pyloxi_policer_bytes_total", pol_dropped)] == 4500
    assert got[("pyloxi_datapath_drops_total", (("reason", "policer"),))] == 3
