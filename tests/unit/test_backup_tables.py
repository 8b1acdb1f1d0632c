"""The backup tables' conversions (pyloxi.client.backup), without a server."""

from __future__ import annotations

import pytest

from pyloxi.client.backup import (
    EXPORTED_BY_NAME,
    BadConfigFile,
    components_from_query,
    lb_body,
    lb_to_mod,
    mirror_body,
    mirror_to_mod,
    policy_body,
    policy_to_mod,
    yaml_call,
)


def test_lb_names_round_trip() -> None:
    listed = {"serviceArguments": {"externalIP": "1.1.1.1", "port": 80, "protocol": "tcp",
                                   "security": 1, "host": "a.example", "inactiveTimeOut": 30},
              "endpoints": [{"endpointIP": "2.2.2.2", "targetPort": 80, "weight": 1,
                             "state": "active", "counter": "1:2"}],
              "secondaryIPs": None, "allowedSources": None}
    mod = lb_to_mod(listed)
    assert mod["serviceArguments"] == {"externalIP": "1.1.1.1", "port": 80, "protocol": "tcp",
                                       "lbsec": 1, "path": "a.example", "inactiveTimeout": 30}
    assert mod["endpoints"][0]["counters"] == "1:2"
    assert lb_body(mod) == {
        "serviceArguments": {"externalIP": "1.1.1.1", "port": 80, "protocol": "tcp",
                             "security": 1, "host": "a.example", "inactiveTimeOut": 30},
        "endpoints": [{"endpointIP": "2.2.2.2", "targetPort": 80, "weight": 1}]}


def test_mirror_and_policy_use_go_field_names() -> None:
    mirror = {"mirrorIdent": "m1", "mirrorInfo": {"type": 0, "port": "eth1", "vlan": 0},
              "targetObject": {"attachment": 1, "mirrObjName": "eth0"}}
    mod = mirror_to_mod(mirror)
    assert mod == {"Ident": "m1", "Info": {"MirrType": 0, "MirrPort": "eth1", "MirrVlan": 0},
                   "Target": {"AttachMent": 1, "MirrObjName": "eth0"}}
    assert mirror_body(mod) == mirror
    policy = {"policyIdent": "p1", "policyInfo": {"type": 0, "peakInfoRate": 100,
                                                  "committedInfoRate": 50},
              "targetObject": {"attachment": 1, "polObjName": "eth0"}}
    mod = policy_to_mod(policy)
    assert mod["Info"] == {"PolType": 0, "PeakInfoRate": 100, "CommittedInfoRate": 50}
    assert policy_body(mod) == policy
    call = EXPORTED_BY_NAME["policy"].delete
    assert call is not None and call(mod).path == "/config/policy/ident/p1"


def test_components_query() -> None:
    assert [c.name for c in components_from_query(None)] == [
        "loadbalancer", "cluster", "endpoint", "firewall", "mirror", "policy"]
    assert [c.name for c in components_from_query(" Firewall, loadbalancer")] == [
        "loadbalancer", "firewall"]
    with pytest.raises(BadConfigFile):
        components_from_query("firewall,rules")


def test_yaml_kinds_and_metadata() -> None:
    call = yaml_call({"kind": "VlanMember", "metadata": {"vid": 100},
                      "spec": {"dev": "eth1", "tagged": True}})
    assert (call.method, call.path, call.body) == (
        "POST", "/config/vlan/100/member", {"dev": "eth1", "tagged": True})
    assert yaml_call({"kind": "Vxlan", "spec": {"vxlanID": 7}}).path == "/config/tunnel/vxlan"
    lb = yaml_call({"kind": "lb", "spec": {"serviceArguments": {
        "externalIP": "1.1.1.1", "port": 80, "path": "/x"}, "endpoints": []}})
    assert lb.body["serviceArguments"]["host"] == "/x"
    for bad in ({"kind": "VxlanPeer", "spec": {"peerIP": "1.1.1.1"}},
                {"kind": "Route"}, {"kind": "Nope", "spec": {}}, ["not", "a", "mapping"]):
        with pytest.raises(BadConfigFile):
            yaml_call(bad)
