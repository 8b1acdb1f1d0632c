"""The network configuration API (/config/port, route, ipv4address, neighbor, fdb, vlan,
tunnel/vxlan) over an in-memory netlink layer: loxilb's bodies and answers, bad values refused
with 400 and nothing changed, the layer's refusals passed on with their status and reason."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from netfake import FakeNetConfig

from pyloxi.api import create_app
from pyloxi.api.netcfg import netcfg_router

B = "/netlox/v1/config"


@pytest.fixture
def net() -> FakeNetConfig:
    return FakeNetConfig("eth0", "eth1")


@pytest.fixture
def http(net: FakeNetConfig) -> Iterator[TestClient]:
    app = create_app(object(), version="0", extra_routers=[netcfg_router(net)])
    with TestClient(app) as client:
        yield client


def ok(r: Any) -> None:
    assert r.status_code == 200, r.text
    assert r.json() == {"result": "Success"}


def refused(r: Any, code: int, *words: str) -> None:
    assert r.status_code == code, r.text
    body = r.json()
    assert set(body) == {"code", "message", "result"} and body["code"] == code, body
    for w in words:
        assert w in body["message"], body


def test_route_create_list_delete(http: TestClient, net: FakeNetConfig) -> None:
    ok(http.post(f"{B}/route", json={"destinationIPNet": "192.168.212.7/24",
                                     "gateway": "172.17.0.254", "protocol": "Static"}))
    assert net.routes_ == {"192.168.212.0/24": ("172.17.0.254", "static")}
    got = http.get(f"{B}/route/all").json()["routeAttr"]
    assert [(r["destinationIPNet"], r["gateway"], r["protocol"]) for r in got] == [
        ("192.168.212.0/24", "172.17.0.254", "static")]
    # the kernel's refusal: its status and reason
    refused(http.post(f"{B}/route", json={"destinationIPNet": "192.168.212.0/24",
                                          "gateway": "172.17.0.1"}), 409, "file exists")
    ok(http.delete(f"{B}/route/destinationIPNet/192.168.212.0/24"))
    assert net.routes_ == {}
    refused(http.delete(f"{B}/route/destinationIPNet/192.168.212.0/24"), 404, "no such")


@pytest.mark.parametrize("body, words", [
    ({"destinationIPNet": "10.0.0.0/33", "gateway": "1.1.1.1"}, ("destinationIPNet",)),
    ({"destinationIPNet": "10.0.0.0/8"}, ("gateway", "required")),
    ({"destinationIPNet": "10.0.0.0/8", "gateway": "1.1.1"}, ("gateway",)),
    ({"destinationIPNet": "10.0.0.0/8", "gateway": "fd00::1"}, ("gateway", "family")),
    ({"destinationIPNet": "10.0.0.0/8", "gateway": "1.1.1.1", "protocol": "ospf"},
     ("protocol",)),
    ({"destinationIPNet": 10, "gateway": "1.1.1.1"}, ("destinationIPNet",)),
])
def test_route_bad_values_are_400(http: TestClient, net: FakeNetConfig,
                                  body: dict[str, Any], words: tuple[str, ...]) -> None:
    before = net.state()
    refused(http.post(f"{B}/route", json=body), 400, *words)
    assert net.state() == before


def test_route_delete_bad_path(http: TestClient) -> None:
    refused(http.delete(f"{B}/route/destinationIPNet/10.0.0.0/40"), 400, "mask")
    refused(http.delete(f"{B}/route/destinationIPNet/10.0.0/8"), 400, "ip_address")


def test_address_create_list_delete(http: TestClient, net: FakeNetConfig) -> None:
    ok(http.post(f"{B}/ipv4address", json={"dev": "eth0", "ipAddress": "192.168.0.1/24"}))
    assert net.devs["eth0"].addrs == ["192.168.0.1/24"]  # host bits kept
    got = http.get(f"{B}/ipv4address/all").json()["ipAttr"]
    assert got == [{"dev": "eth0", "ipAddress": ["192.168.0.1/24"], "sync": 0}]
    refused(http.post(f"{B}/ipv4address", json={"dev": "eth0", "ipAddress": "192.168.0.1/24"}),
            409, "exists")
    ok(http.delete(f"{B}/ipv4address/192.168.0.1/24/dev/eth0"))
    assert net.devs["eth0"].addrs == []
    refused(http.delete(f"{B}/ipv4address/192.168.0.1/24/dev/eth0"), 404, "not found")


@pytest.mark.parametrize("body, words", [
    ({"dev": "nosuch0", "ipAddress": "10.0.0.1/24"}, ("no such device", "nosuch0")),
    ({"dev": "eth0", "ipAddress": "10.0.0.1"}, ("ipAddress", "prefix-length")),
    ({"dev": "eth0", "ipAddress": "10.0.0.1/33"}, ("ipAddress",)),
    ({"dev": "eth 0", "ipAddress": "10.0.0.1/24"}, ("dev", "interface name")),
    ({"dev": "a-very-long-interface-name", "ipAddress": "10.0.0.1/24"}, ("dev",)),
    ({"dev": "../x", "ipAddress": "10.0.0.1/24"}, ("dev",)),
])
def test_address_bad_values_are_400(http: TestClient, net: FakeNetConfig,
                                    body: dict[str, Any], words: tuple[str, ...]) -> None:
    before = net.state()
    refused(http.post(f"{B}/ipv4address", json=body), 400, *words)
    assert net.state() == before


def test_neighbor(http: TestClient, net: FakeNetConfig) -> None:
    ok(http.post(f"{B}/neighbor", json={"ipAddress": "192.168.0.9", "dev": "eth0",
                                        "macAddress": "AA-AA-AA-AA-AA-0A"}))
    assert http.get(f"{B}/neighbor/all").json() == {"neighborAttr": [
        {"ipAddress": "192.168.0.9", "dev": "eth0", "macAddress": "aa:aa:aa:aa:aa:0a"}]}
    before = net.state()
    refused(http.post(f"{B}/neighbor", json={"ipAddress": "192.168.0.8", "dev": "eth0",
                                             "macAddress": "aa:aa:aa:aa:aa"}), 400,
            "macAddress")
    refused(http.post(f"{B}/neighbor", json={"ipAddress": "192.168.0.8", "dev": "eth0"}),
            400, "macAddress", "required")
    refused(http.post(f"{B}/neighbor", json={"ipAddress": "192.168.0.8", "dev": "nosuch0",
                                             "macAddress": "aa:aa:aa:aa:aa:aa"}), 400,
            "no such device")
    assert net.state() == before
    ok(http.delete(f"{B}/neighbor/192.168.0.9/dev/eth0"))
    refused(http.delete(f"{B}/neighbor/192.168.0.9/dev/eth0"), 404)
    refused(http.delete(f"{B}/neighbor/192.168.0.9/dev/nosuch0"), 400, "no such device")


def test_fdb(http: TestClient, net: FakeNetConfig) -> None:
    ok(http.post(f"{B}/fdb", json={"dev": "eth1", "macAddress": "02:00:00:00:00:aa"}))
    assert http.get(f"{B}/fdb/all").json() == {"fdbAttr": [
        {"dev": "eth1", "macAddress": "02:00:00:00:00:aa"}]}
    refused(http.post(f"{B}/fdb", json={"dev": "eth1", "macAddress": "02:00:00:00:00:zz"}),
            400, "MAC")
    refused(http.delete(f"{B}/fdb/02:00:00:00:00:zz/dev/eth1"), 400, "mac_address")
    ok(http.delete(f"{B}/fdb/02-00-00-00-00-AA/dev/eth1"))  # any MAC spelling
    assert net.devs["eth1"].fdb == []


def test_vlan_and_members(http: TestClient, net: FakeNetConfig) -> None:
    ok(http.post(f"{B}/vlan", json={"vid": 100}))
    refused(http.post(f"{B}/vlan", json={"vid": 100}), 409, "exists")
    ok(http.post(f"{B}/vlan/100/member", json={"dev": "eth0", "tagged": True}))
    ok(http.post(f"{B}/vlan/100/member", json={"dev": "eth1"}))  # default: untagged
    got = http.get(f"{B}/vlan/all").json()["vlanAttr"]
    assert [(v["dev"], v["vid"]) for v in got] == [("vlan100", 100)]
    assert sorted((m["dev"], m["tagged"]) for m in got[0]["member"]) == [
        ("eth0", True), ("eth1", False)]
    assert set(got[0]["vlanStatistic"]) == {"inBytes", "inPackets", "outBytes", "outPackets"}
    refused(http.post(f"{B}/vlan/100/member", json={"dev": "eth0", "tagged": True}), 409)
    refused(http.post(f"{B}/vlan/200/member", json={"dev": "eth0"}), 404, "vlan 200")
    ok(http.delete(f"{B}/vlan/100/member/eth0/tagged/true"))
    refused(http.delete(f"{B}/vlan/100/member/eth0/tagged/true"), 404)
    ok(http.delete(f"{B}/vlan/100/member/eth1/tagged/false"))
    ok(http.delete(f"{B}/vlan/100"))
    refused(http.delete(f"{B}/vlan/100"), 404)
    assert set(net.devs) == {"lo", "eth0", "eth1"}


@pytest.mark.parametrize("method, path, body, words", [
    ("POST", "/vlan", {"vid": 1}, ("vid",)),
    ("POST", "/vlan", {"vid": 4095}, ("vid",)),
    ("POST", "/vlan", {"vid": "100"}, ("vid",)),
    ("POST", "/vlan", {}, ("vid", "required")),
    ("DELETE", "/vlan/0", None, ("vlan_id",)),
    ("DELETE", "/vlan/abc", None, ("vlan_id",)),
    ("POST", "/vlan/5000/member", {"dev": "eth0"}, ("vlan_id",)),
    ("POST", "/vlan/100/member", {"dev": "nosuch0"}, ("no such device",)),
    ("POST", "/vlan/100/member", {"dev": "eth0", "tagged": "yes"}, ("tagged",)),
    ("DELETE", "/vlan/100/member/eth0/tagged/maybe", None, ("tagged",)),
])
def test_vlan_bad_values_are_400(http: TestClient, net: FakeNetConfig, method: str,
                                 path: str, body: Any, words: tuple[str, ...]) -> None:
    ok(http.post(f"{B}/vlan", json={"vid": 100}))
    before = net.state()
    refused(http.request(method, f"{B}{path}", json=body), 400, *words)
    assert net.state() == before


def test_tagged_member_refused_by_the_kernel_changes_nothing(http: TestClient,
                                                             net: FakeNetConfig) -> None:
    net.vlan_support = False
    ok(http.post(f"{B}/vlan", json={"vid": 100}))
    before = net.state()
    refused(http.post(f"{B}/vlan/100/member", json={"dev": "eth0", "tagged": True}), 500,
            "operation not supported")
    assert net.state() == before


def test_vxlan_and_peers(http: TestClient, net: FakeNetConfig) -> None:
    refused(http.post(f"{B}/tunnel/vxlan", json={"epIntf": "eth0", "vxlanID": 100}), 400,
            "no IPv4 address")
    ok(http.post(f"{B}/ipv4address", json={"dev": "eth0", "ipAddress": "10.1.0.1/24"}))
    ok(http.post(f"{B}/tunnel/vxlan", json={"epIntf": "eth0", "vxlanID": 100}))
    refused(http.post(f"{B}/tunnel/vxlan", json={"epIntf": "eth0", "vxlanID": 100}), 409)
    ok(http.post(f"{B}/tunnel/vxlan/100/peer", json={"peerIP": "1.1.1.1"}))
    ok(http.post(f"{B}/tunnel/vxlan/100/peer", json={"peerIP": "1.1.1.2"}))
    refused(http.post(f"{B}/tunnel/vxlan/100/peer", json={"peerIP": "fd00::1"}), 400, "IPv4")
    refused(http.post(f"{B}/tunnel/vxlan/7/peer", json={"peerIP": "1.1.1.1"}), 404)
    assert http.get(f"{B}/tunnel/vxlan/all").json() == {"vxlanAttr": [
        {"vxlanName": "vxlan100", "epIntf": "eth0", "vxlanID": 100,
         "peerIP": ["1.1.1.1", "1.1.1.2"]}]}
    ok(http.delete(f"{B}/tunnel/vxlan/100/peer/1.1.1.1"))
    refused(http.delete(f"{B}/tunnel/vxlan/100/peer/1.1.1.1"), 404)
    refused(http.delete(f"{B}/tunnel/vxlan/100/peer/1.1.1"), 400, "PeerIP")
    refused(http.delete(f"{B}/tunnel/vxlan/16777216"), 400, "vxlanID")
    ok(http.delete(f"{B}/tunnel/vxlan/100"))
    refused(http.delete(f"{B}/tunnel/vxlan/100"), 404)


def test_ports(http: TestClient, net: FakeNetConfig) -> None:
    net.attached = {"eth0"}
    got = {p["portName"]: p for p in http.get(f"{B}/port/all").json()["portAttr"]}
    assert set(got) == {"lo", "eth0", "eth1"}
    eth0 = got["eth0"]
    assert eth0["portSoftwareInformation"]["bpfLoaded"] is True
    assert got["eth1"]["portSoftwareInformation"]["bpfLoaded"] is False
    assert eth0["portHardwareInformation"]["mtu"] == 1500
    assert set(eth0) == {"portName", "portNo", "zone", "portSoftwareInformation",
                         "portHardwareInformation", "portStatisticInformation",
                         "portL3Information", "portL2Information", "DataplaneSync"}
    assert set(eth0["portStatisticInformation"]) == {
        "rxBytes", "txBytes", "rxPackets", "txPackets", "rxErrors", "txErrors"}
    assert set(eth0["portL3Information"]) == {"routed", "IPv4Address", "IPv6Address"}


def test_keys_in_any_case(http: TestClient, net: FakeNetConfig) -> None:
    ok(http.post(f"{B}/ipv4address", json={"DEV": "eth0", "IPADDRESS": "10.2.0.1/16"}))
    assert net.devs["eth0"].addrs == ["10.2.0.1/16"]


def test_openapi_lists_the_operations(http: TestClient) -> None:
    paths = http.get("/netlox/v1/swagger.json").json()["paths"]
    ops = {(m.upper(), p) for p, item in paths.items() for m, op in item.items()
           if "network" in op.get("tags", [])}
    assert len(ops) == 23, sorted(ops)
