"""GET /config/export and POST /config/import against the in-memory app (rules on
datapath.memory, endpoints on a ProbeManager, firewall, cistate)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from pyloxi.api import create_app
from pyloxi.api.cistate import cistate_router
from pyloxi.api.endpoint import endpoint_router
from pyloxi.api.firewall import firewall_router
from pyloxi.api.mirror import mirror_router
from pyloxi.api.policy import policy_router
from pyloxi.api.security import TokenCheck
from pyloxi.cluster import ClusterState
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Engine
from pyloxi.engine.firewall import Firewall
from pyloxi.engine.mirror import Mirrors
from pyloxi.engine.policer import Policers
from pyloxi.probes import ProbeManager

B = "/netlox/v1"
RULE = {"serviceArguments": {"externalIP": "20.0.0.1", "port": 80, "protocol": "tcp",
                             "sel": 0, "name": "web", "inactiveTimeOut": 120, "block": 3,
                             "host": "", "security": 0},
        "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 8080, "weight": 1},
                      {"endpointIP": "10.0.0.2", "targetPort": 8080, "weight": 2}]}
RULE2 = {"serviceArguments": {"externalIP": "20.0.0.2", "port": 53, "portMax": 60,
                              "protocol": "udp", "sel": 1},
         "endpoints": [{"endpointIP": "10.0.0.3", "targetPort": 53, "weight": 1}]}
FW = {"ruleArguments": {"sourceIP": "10.1.0.0/16", "destinationIP": "20.0.0.1/32",
                        "minDestinationPort": 80, "maxDestinationPort": 80, "protocol": 6,
                        "preference": 100},
      "opts": {"drop": True}}
EP = {"hostName": "10.0.0.9", "name": "web9", "probeType": "tcp", "probePort": 8080,
      "probeDuration": 30, "inactiveReTries": 2}


def build_app(*, tokens: TokenCheck | None = None,
              extra: list[APIRouter] | None = None) -> Any:
    # `extra` first: its routes shadow the real ones of the same path
    return create_app(Engine(MemoryDatapath()), version="0", tokens=tokens, extra_routers=[
        *(extra or []), endpoint_router(ProbeManager()), cistate_router(ClusterState()),
        firewall_router(Firewall(MemoryDatapath()))])


@pytest.fixture
def http() -> Iterator[TestClient]:
    with TestClient(build_app()) as client:
        yield client


def configure(http: TestClient) -> None:
    for path, body in (("/config/loadbalancer", RULE), ("/config/loadbalancer", RULE2),
                       ("/config/firewall", FW), ("/config/endpoint", EP)):
        r = http.post(B + path, json=body)
        assert r.status_code == 200, r.text


def listings(http: TestClient) -> dict[str, Any]:
    out = {}
    for path in ("/config/loadbalancer/all", "/config/firewall/all", "/config/endpoint/all",
                 "/config/cistate/all"):
        r = http.get(B + path)
        assert r.status_code == 200
        out[path] = r.json()
    return out


def test_export_uses_loxilb_file_names(http: TestClient) -> None:
    configure(http)
    r = http.get(B + "/config/export")
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"].startswith("attachment; filename=loxilb-config-")
    assert r.headers["content-disposition"].endswith(".json")
    data = r.json()
    assert {"loadbalancer", "cluster", "endpoint", "firewall", "timestamp", "version"} <= set(data)
    assert "mirror" not in data and "policy" not in data  # no such routes here: nothing
    web = next(x for x in data["loadbalancer"] if x["serviceArguments"]["name"] == "web")
    serv = web["serviceArguments"]
    # loxilb's internal LbServiceArg names
    assert serv["inactiveTimeout"] == 120 and "lbsec" in serv and "path" in serv
    assert "security" not in serv and "host" not in serv
    assert all("counters" in ep for ep in web["endpoints"])
    assert set(data["cluster"][0]) == {"instance", "haState", "Addr"}
    assert data["firewall"][0]["ruleArguments"]["sourceIP"] == "10.1.0.0/16"


def test_export_components_filter(http: TestClient) -> None:
    configure(http)
    data = http.get(B + "/config/export", params={"components": "firewall,policy"}).json()
    assert set(data) == {"firewall", "timestamp", "version"}
    r = http.get(B + "/config/export", params={"components": "firewall,bogus"})
    assert r.status_code == 400 and "bogus" in r.json()["message"]


def test_import_round_trip_to_a_fresh_app(http: TestClient) -> None:
    configure(http)
    exported = http.get(B + "/config/export").content
    before = listings(http)
    with TestClient(build_app()) as fresh:
        r = fresh.post(B + "/config/import",
                       files={"configuration": ("c.json", exported, "application/json")})
        assert (r.status_code, r.json()) == (200, {"result": "Success"}), r.text
        assert listings(fresh) == before


def test_import_replaces_what_was_there(http: TestClient) -> None:
    configure(http)
    exported = http.get(B + "/config/export").json()
    before = listings(http)
    other = {"serviceArguments": {"externalIP": "30.0.0.1", "port": 443, "protocol": "tcp"},
             "endpoints": [{"endpointIP": "10.9.9.9", "targetPort": 443, "weight": 1}]}
    assert http.post(B + "/config/loadbalancer", json=other).status_code == 200
    assert http.delete(B + "/config/loadbalancer/externalipaddress/20.0.0.2/port/53/portmax/60"
                           "/protocol/udp").status_code == 200
    r = http.post(B + "/config/import", json=exported)  # a JSON body works too
    assert r.status_code == 200, r.text
    assert listings(http) == before


def test_bad_file_is_400_and_changes_nothing(http: TestClient) -> None:
    configure(http)
    before = listings(http)
    bad_rule = {"serviceArguments": {"externalIP": "not-an-ip", "port": 80, "protocol": "tcp"}}
    for payload in (b"{not json", b"[1,2]", json.dumps({"loadbalancer": {"x": 1}}).encode(),
                    json.dumps({"loadbalancer": [RULE, bad_rule]}).encode(),
                    json.dumps({"firewall": [{"ruleArguments": {"protocol": "tcp?"}}]}).encode()):
        r = http.post(B + "/config/import",
                      files={"configuration": ("c.json", payload, "application/json")})
        assert r.status_code == 400, (payload, r.text)
    r = http.post(B + "/config/import", files={"other": ("c.json", b"{}", "application/json")})
    assert r.status_code == 400 and "configuration" in r.json()["message"]
    assert listings(http) == before


def test_failed_add_restores_the_backup(http: TestClient) -> None:
    configure(http)
    before = listings(http)
    # entries the model takes, but the engine refuses the second (TLS without fullproxy)
    # after the first was added
    a = {"serviceArguments": {"externalIP": "40.0.0.1", "port": 80, "protocol": "tcp"},
         "endpoints": [{"endpointIP": "10.4.0.1", "targetPort": 80, "weight": 1}]}
    b = {"serviceArguments": {"externalIP": "40.0.0.2", "port": 80, "protocol": "tcp",
                              "lbsec": 1},
         "endpoints": [{"endpointIP": "10.4.0.2", "targetPort": 80, "weight": 1}]}
    r = http.post(B + "/config/import", json={"loadbalancer": [a, b], "firewall": []})
    assert r.status_code >= 400, r.text
    body = r.json()
    assert "loadbalancer[1]" in body["message"] and "restored" in body["message"]
    assert listings(http) == before


def test_import_of_a_component_this_server_lacks_fails_and_restores(http: TestClient) -> None:
    configure(http)
    before = listings(http)
    mirror = {"Ident": "m1", "Info": {"MirrType": 0, "MirrPort": "eth1"},
              "Target": {"AttachMent": 1, "MirrObjName": "eth0"}}
    r = http.post(B + "/config/import", json={"loadbalancer": [RULE], "mirror": [mirror]})
    assert r.status_code == 404, r.text
    assert "mirror[0]" in r.json()["message"]
    assert listings(http) == before


def test_export_reports_a_failing_component() -> None:
    broken = APIRouter(prefix="/config")

    @broken.get("/policy/all")
    def fail() -> None:
        raise RuntimeError("policer table unreadable")

    with TestClient(build_app(extra=[broken]), raise_server_exceptions=False) as client:
        r = client.get(B + "/config/export")
        assert r.status_code == 500
        assert r.json()["message"].startswith("export failed: policy: listing /config/policy/all")
        # the other components still export when policy is not asked for
        assert client.get(B + "/config/export",
                          params={"components": "loadbalancer"}).status_code == 200


def test_import_carries_the_callers_token() -> None:
    class Check:
        def accepts(self, token: bytes) -> bool:
            return token == b"s3cret"

    with TestClient(build_app(tokens=Check())) as client:
        assert client.get(B + "/config/export").status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        r = client.post(B + "/config/import", json={"loadbalancer": [RULE]}, headers=auth)
        assert r.status_code == 200, r.text
        got = client.get(B + "/config/loadbalancer/all", headers=auth).json()["lbAttr"]
        assert [x["serviceArguments"]["externalIP"] for x in got] == ["20.0.0.1"]


def test_cross_site_form_import_is_refused(http: TestClient) -> None:
    r = http.post(B + "/config/import", headers={"Origin": "http://evil.example"},
                  files={"configuration": ("c.json", b"{}", "application/json")})
    assert r.status_code == 403
    r = http.post(B + "/config/import", headers={"Origin": "http://testserver"},
                  files={"configuration": ("c.json", b"{}", "application/json")})
    assert r.status_code == 200, r.text


def test_form_bodies_only_on_import(http: TestClient) -> None:
    r = http.post(B + "/config/loadbalancer",
                  files={"configuration": ("c.json", json.dumps(RULE).encode(), "text/plain")})
    assert r.status_code == 415
    assert http.get(B + "/config/loadbalancer/all").json().get("lbAttr", []) == []


def test_loxilb_export_file_imports() -> None:
    """A file as loxilb writes it (internal names, Go's casing, output fields) imports."""
    from_loxilb = {
        "loadbalancer": [{"serviceArguments": {
            "externalIP": "20.0.0.9", "privateIP": "", "port": 8080, "portMax": 0,
            "protocol": "tcp", "block": 0, "sel": 0, "bgp": False, "monitor": False,
            "oper": 0, "lbsec": 0, "mode": 0, "inactiveTimeout": 60, "managed": False,
            "probetype": "", "probeport": 0, "probereq": "", "proberesp": "",
            "probeTimeout": 0, "probeRetries": 0, "name": "n1", "persistTimeout": 10800,
            "snat": False, "path": "", "proxyprotocolv2": False, "egress": False},
            "secondaryIPs": None, "allowedSources": None,
            "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 80, "weight": 1,
                           "state": "active", "counters": "0:0"}]}],
        "endpoint": [dict(EP, minDelay="1ms", avgDelay="1ms", maxDelay="1ms",
                          currState="ok")],
        "firewall": [dict(FW, opts=dict(FW["opts"], counter="5:300"))],
        "timestamp": "2026-01-01T00:00:00Z", "version": "v0.9.8"}
    with TestClient(build_app()) as client:
        r = client.post(B + "/config/import", files={
            "configuration": ("c.json", json.dumps(from_loxilb).encode(), "application/json")})
        assert r.status_code == 200, r.text
        got = client.get(B + "/config/loadbalancer/all").json()["lbAttr"]
        assert [(x["serviceArguments"]["name"], x["serviceArguments"]["inactiveTimeOut"])
                for x in got] == [("n1", 60)]
        assert [e["name"] for e in client.get(B + "/config/endpoint/all").json()["Attr"]] == [
            "web9"]
        assert len(client.get(B + "/config/firewall/all").json()["fwAttr"]) == 1


def test_failed_clear_restores_the_backup() -> None:
    """A delete refused while clearing: what was deleted comes back, the refusal answers."""
    stubborn = APIRouter(prefix="/config")

    @stubborn.delete("/firewall")
    def refuse() -> None:
        raise RuntimeError("firewall table locked")

    with TestClient(build_app(extra=[stubborn]), raise_server_exceptions=False) as client:
        configure(client)
        before = listings(client)
        r = client.post(B + "/config/import", json={"loadbalancer": [RULE2]})
        assert r.status_code == 500, r.text
        assert "firewall: removing an entry failed" in r.json()["message"]
        assert "restored" in r.json()["message"]
        assert listings(client) == before


def test_rule_probe_settings_survive_export_import(http: TestClient) -> None:
    """Unlike loxicmd's lbconfig.txt, the export keeps a rule's own probe settings."""
    monitored = {"serviceArguments": {"externalIP": "20.0.0.3", "port": 80, "protocol": "tcp",
                                      "monitor": True, "probetype": "tcp", "probeport": 8080,
                                      "probeTimeout": 5, "probeRetries": 3},
                 "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 80, "weight": 1}]}
    r = http.post(B + "/config/loadbalancer", json=monitored)
    assert r.status_code == 200, r.text
    exported = http.get(B + "/config/export").content
    with TestClient(build_app()) as fresh:
        r = fresh.post(B + "/config/import", content=exported,
                       headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        got = fresh.get(B + "/config/loadbalancer/all").json()["lbAttr"][0]["serviceArguments"]
        assert (got["monitor"], got["probetype"], got["probeport"], got["probeTimeout"],
                got["probeRetries"]) == (True, "tcp", 8080, 5, 3)


def test_import_takes_files_over_the_body_limit(http: TestClient) -> None:
    big = json.dumps({"loadbalancer": [RULE], "timestamp": "x" * (3 << 20)}).encode()
    r = http.post(B + "/config/import",
                  files={"configuration": ("c.json", big, "application/json")})
    assert r.status_code == 200, r.text[:200]
    assert len(http.get(B + "/config/loadbalancer/all").json()["lbAttr"]) == 1
    # elsewhere the 1 MiB limit holds
    r = http.post(B + "/config/loadbalancer", content=big,
                  headers={"content-type": "application/json"})
    assert r.status_code == 413


def _with_policy_and_mirror() -> Any:
    return build_app(extra=[
        policy_router(Policers(MemoryDatapath())),
        mirror_router(Mirrors(MemoryDatapath(interfaces=frozenset({"eth0", "eth1"})),
                              ports=lambda: ("eth0", "eth1")))])


def test_policers_and_mirrors_round_trip() -> None:
    pol = {"policyIdent": "pol-web", "policyInfo": {"type": 0, "colorAware": False,
                                                    "peakInfoRate": 200, "committedInfoRate": 100,
                                                    "committedBlkSize": 0, "excessBlkSize": 0},
           "targetObject": {"attachment": 2, "polObjName": "web"}}
    mirr = {"mirrorIdent": "m1", "mirrorInfo": {"type": 0, "port": "eth1"},
            "targetObject": {"attachment": 1, "mirrObjName": "eth0"}}

    def objects(client: TestClient) -> tuple[Any, Any]:
        pols = client.get(B + "/config/policy/all").json()["polAttr"]
        mirrs = client.get(B + "/config/mirror/all").json()["mirrAttr"]
        return ([{k: v for k, v in p.items() if k != "stats"} for p in pols],
                [{k: v for k, v in m.items() if k != "counter"} for m in mirrs])

    with TestClient(_with_policy_and_mirror()) as src:
        for path, body in (("/config/loadbalancer", RULE), ("/config/policy", pol),
                           ("/config/mirror", mirr)):
            r = src.post(B + path, json=body)
            assert r.status_code == 200, r.text
        data = src.get(B + "/config/export").json()
        assert [p["Ident"] for p in data["policy"]] == ["pol-web"]  # loxilb's PolMod names
        assert [m["Ident"] for m in data["mirror"]] == ["m1"]
        before = objects(src)
    with TestClient(_with_policy_and_mirror()) as fresh:
        r = fresh.post(B + "/config/import", json=data)
        assert (r.status_code, r.json()) == (200, {"result": "Success"}), r.text
        assert objects(fresh) == before
        assert before[0] and before[1]
