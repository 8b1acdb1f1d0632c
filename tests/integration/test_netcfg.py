"""Network configuration through the real daemon, in its namespace (lb), toward a peer
namespace: an address and a route created through the API carry ping and TCP; what `ip`
changes shows up in the listings; kernel refusals answer loxilb's error body and change
nothing; a VLAN bridge with a member and a VXLAN device with a peer pass packets to the peer.

    lb: ethp (no address) ── peer: eth0 10.0.50.2/24, 10.0.60.1/32 on lo
    lb: ethv              ── peer: eth1

The kernel here may have no 802.1Q support (CONFIG_VLAN_8021Q): a tagged member is then refused
with the kernel's reason and the VLAN test goes on with an untagged member; with 802.1Q the
tagged member carries the traffic, to the peer's eth1.100.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pyloxi.host.namespaces import in_netns
from pyloxi.testing.lab import LbTopology, cleanup_stale
from pyloxi.testing.lab.netns import Netns

from ..waiting import wait_until
from .conftest import API_PORT, DaemonHandle

PEER_IP = "10.0.50.2"
LB_IP = "10.0.50.1"
FAR_IP = "10.0.60.1"  # behind the peer: reached through the route the API adds

_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
while True:
    c, a = s.accept(); c.sendall(b"peer " + a[0].encode()); c.close()
"""
_BROADCAST = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
for _ in range(int(sys.argv[2])):
    s.sendto(b"x", (sys.argv[1], 9))
"""


class Rig:
    def __init__(self, topo: LbTopology, peer: Netns, daemon: DaemonHandle) -> None:
        self.topo, self.peer, self.d = topo, peer, daemon
        self.lb = topo.lb

    def api(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """The API from this process, the thread moved into the LB namespace for the request
        (DaemonHandle.api starts a Python per call: seconds on a busy machine)."""
        with in_netns(self.lb.name):
            return httpx.request(method, f"http://127.0.0.1:{API_PORT}/netlox/v1{path}",
                                 json=body, timeout=10)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        r = self.api(method, path, body)
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def refused(self, method: str, path: str, body: Any, code: int, *words: str) -> None:
        r = self.api(method, path, body)
        assert r.status_code == code, f"{method} {path}: {r.status_code} {r.text}"
        got = r.json()
        assert got["code"] == code and set(got) == {"code", "message", "result"}, got
        for w in words:
            assert w in got["message"], got

    def pings(self, ip: str) -> bool:
        return self.lb.run(["ping", "-c1", "-W1", ip], check=False).returncode == 0

    def tcp(self, ip: str, port: int = 7000) -> str:
        """What the peer's server answers a connection from the LB namespace ("ERR ...")."""
        with in_netns(self.lb.name):
            try:
                with socket.create_connection((ip, port), timeout=3) as c:
                    return c.recv(100).decode()
            except OSError as exc:
                return f"ERR {exc}"

    def ip_json(self, *args: str) -> Any:
        return json.loads(self.lb.run(["ip", "-j", *args]).stdout or "[]")


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    cleanup_stale()
    topo = LbTopology(1)
    try:
        peer = topo.lab.netns("pr")
        # both links exist before the daemon starts: it attaches its datapath to them
        topo.lab.link(peer, "eth0", f"{PEER_IP}/24", topo.lb, "ethp", None)
        topo.lab.link(peer, "eth1", None, topo.lb, "ethv", None)
        peer.run(f"ip addr add {FAR_IP}/32 dev lo")
        peer.popen([sys.executable, "-c", _SERVER, "0.0.0.0", "7000"])
        d = DaemonHandle(topo, "net")
        d.start()
        try:
            yield Rig(topo, peer, d)
        finally:
            d.stop()
    finally:
        topo.close()


def test_ports_list_the_interfaces(rig: Rig) -> None:
    ports = {p["portName"]: p for p in rig.ok("GET", "/config/port/all")["portAttr"]}
    link = rig.ip_json("link", "show", "ethp")[0]
    ethp = ports["ethp"]
    hw, sw = ethp["portHardwareInformation"], ethp["portSoftwareInformation"]
    assert hw["macAddress"] == link["address"] and hw["mtu"] == link["mtu"] == 1500
    assert ethp["portNo"] == sw["osId"] == link["ifindex"]
    assert sw["bpfLoaded"] is True and sw["portActive"] is True and hw["state"] is True
    assert ports["lo"]["portSoftwareInformation"]["bpfLoaded"] is False
    # counters are the kernel's: they move with traffic
    rx = ethp["portStatisticInformation"]["rxPackets"]
    rig.peer.run([sys.executable, "-c", _BROADCAST, "10.0.50.255", "3"])
    again = {p["portName"]: p for p in rig.ok("GET", "/config/port/all")["portAttr"]}
    assert again["ethp"]["portStatisticInformation"]["rxPackets"] >= rx + 3


def test_address_and_route_carry_traffic(rig: Rig) -> None:
    assert not rig.pings(PEER_IP)  # no address on ethp yet
    rig.d.cli("create", "ip", f"{LB_IP}/24", "ethp")
    try:
        got = {a["dev"]: a["ipAddress"] for a in rig.ok("GET", "/config/ipv4address/all")["ipAttr"]}
        assert f"{LB_IP}/24" in got["ethp"]
        wait_until(lambda: rig.pings(PEER_IP), 10, what="ping to the peer over the new address")

        assert rig.tcp(FAR_IP).startswith("ERR")  # no route to it yet
        rig.ok("POST", "/config/route", {"destinationIPNet": "10.0.60.0/24",
                                          "gateway": PEER_IP, "protocol": "static"})
        assert rig.tcp(FAR_IP) == f"peer {LB_IP}"
        assert rig.pings(FAR_IP)
        routes = {r["destinationIPNet"]: r for r in rig.ok("GET", "/config/route/all")["routeAttr"]}
        assert routes["10.0.60.0/24"]["gateway"] == PEER_IP
        assert routes["10.0.60.0/24"]["protocol"] == "static"
        assert rig.ip_json("route", "show", "10.0.60.0/24")[0]["protocol"] == "static"

        # the kernel refuses: loxilb's body with its reason, nothing changed
        rig.refused("POST", "/config/route", {"destinationIPNet": "10.0.60.0/24",
                                              "gateway": "10.0.50.3"}, 409, "file exists")
        rig.refused("POST", "/config/route", {"destinationIPNet": "10.0.61.0/24",
                                              "gateway": "10.9.9.9"}, 400, "unreachable")
        assert [r["gateway"] for r in rig.ip_json("route", "show", "10.0.60.0/24")] == [PEER_IP]
        assert rig.ip_json("route", "show", "10.0.61.0/24") == []
        rig.refused("POST", "/config/ipv4address", {"dev": "nosuch0",
                                                    "ipAddress": "10.0.90.1/24"}, 400,
                    "no such device")
        rig.refused("POST", "/config/ipv4address", {"dev": "ethp", "ipAddress": f"{LB_IP}/24"},
                    409, "exists")

        rig.ok("DELETE", "/config/route/destinationIPNet/10.0.60.0/24")
        assert rig.tcp(FAR_IP).startswith("ERR")
        rig.refused("DELETE", "/config/route/destinationIPNet/10.0.60.0/24", None, 404)
    finally:
        rig.api("DELETE", "/config/route/destinationIPNet/10.0.60.0/24")
        rig.api("DELETE", f"/config/ipv4address/{LB_IP}/24/dev/ethp")
    assert not any(a.get("local") == LB_IP for link in rig.ip_json("addr", "show", "ethp")
                   for a in link["addr_info"])


def test_changes_made_with_ip_show_up(rig: Rig) -> None:
    lb = rig.lb
    lb.run("ip addr add 10.0.70.1/24 dev ethp")
    lb.run("ip route add 10.0.80.0/24 via 10.0.70.2")
    lb.run("ip neigh add 10.0.70.9 lladdr 02:00:00:00:70:09 dev ethp nud permanent")
    try:
        addrs = {a["dev"]: a["ipAddress"]
                 for a in rig.ok("GET", "/config/ipv4address/all")["ipAttr"]}
        assert "10.0.70.1/24" in addrs["ethp"]
        routes = {r["destinationIPNet"]: r for r in rig.ok("GET", "/config/route/all")["routeAttr"]}
        assert routes["10.0.80.0/24"]["gateway"] == "10.0.70.2"
        assert routes["10.0.70.0/24"]["flags"] == "Interface"
        neigh = rig.ok("GET", "/config/neighbor/all")["neighborAttr"]
        assert {"ipAddress": "10.0.70.9", "dev": "ethp", "macAddress": "02:00:00:00:70:09"} in neigh
        # and the API removes what `ip` made
        rig.ok("DELETE", "/config/neighbor/10.0.70.9/dev/ethp")
        assert lb.run("ip neigh show 10.0.70.9 dev ethp").stdout.strip() == ""
        rig.ok("POST", "/config/neighbor", {"ipAddress": "10.0.70.8", "dev": "ethp",
                                            "macAddress": "02:00:00:00:70:08"})
        assert "02:00:00:00:70:08" in lb.run("ip neigh show 10.0.70.8 dev ethp").stdout
        rig.refused("POST", "/config/neighbor", {"ipAddress": "10.0.70.8", "dev": "ethp",
                                                 "macAddress": "02:00:00:00:70:07"}, 409)
        assert "02:00:00:00:70:08" in lb.run("ip neigh show 10.0.70.8 dev ethp").stdout
    finally:
        lb.run("ip neigh del 10.0.70.8 dev ethp", check=False)
        lb.run("ip route del 10.0.80.0/24", check=False)
        lb.run("ip addr del 10.0.70.1/24 dev ethp", check=False)


def test_vlan_passes_packets_to_the_peer(rig: Rig) -> None:
    rig.ok("POST", "/config/vlan", {"vid": 100})
    try:
        r = rig.api("POST", "/config/vlan/100/member", {"dev": "ethv", "tagged": True})
        tagged = r.status_code == 200
        if tagged:  # 802.1Q: the peer receives tagged frames on eth1.100
            rig.peer.run("ip link add link eth1 name eth1.100 type vlan id 100")
            peer_dev = "eth1.100"
        else:  # no 802.1Q in this kernel: its reason, and nothing left behind
            assert r.status_code == 500 and "operation not supported" in r.text, r.text
            assert rig.lb.run("ip link show ethv.100", check=False).returncode != 0
            members = rig.ok("GET", "/config/vlan/all")["vlanAttr"][0]["member"]
            assert members == []
            rig.d.cli("create", "vlanmember", "100", "ethv")
            peer_dev = "eth1"
        rig.peer.run(f"ip addr add 10.0.100.2/24 dev {peer_dev}")
        rig.peer.run(f"ip link set {peer_dev} up")
        rig.ok("POST", "/config/ipv4address", {"dev": "vlan100", "ipAddress": "10.0.100.1/24"})

        vlans = rig.ok("GET", "/config/vlan/all")["vlanAttr"]
        assert [(v["dev"], v["vid"], v["member"]) for v in vlans] == [
            ("vlan100", 100, [{"dev": "ethv", "tagged": tagged}])]
        before = vlans[0]["vlanStatistic"]["inPackets"]
        wait_until(lambda: rig.pings("10.0.100.2"), 10, what="ping over vlan100")
        assert rig.tcp("10.0.100.2") == "peer 10.0.100.1"
        after = rig.ok("GET", "/config/vlan/all")["vlanAttr"][0]["vlanStatistic"]["inPackets"]
        assert after >= before + 2
        ports = {p["portName"]: p for p in rig.ok("GET", "/config/port/all")["portAttr"]}
        assert ports["vlan100"]["portL2Information"] == {"isPvid": True, "vid": 100}
        assert ports["vlan100"]["portSoftwareInformation"]["portType"] == 0x10
        assert ports["ethv" if not tagged else "ethv.100"]["portHardwareInformation"][
            "master"] == "vlan100"

        rig.ok("DELETE", f"/config/vlan/100/member/ethv/tagged/{str(tagged).lower()}")
        assert not rig.pings("10.0.100.2")
    finally:
        rig.api("DELETE", "/config/vlan/100")
        rig.peer.run("ip link del eth1.100", check=False)
        rig.peer.run("ip addr flush dev eth1", check=False)
    assert rig.lb.run("ip link show vlan100", check=False).returncode != 0
    assert rig.ok("GET", "/config/vlan/all")["vlanAttr"] == []


def test_vxlan_passes_packets_to_the_peer(rig: Rig) -> None:
    rig.ok("POST", "/config/ipv4address", {"dev": "ethp", "ipAddress": f"{LB_IP}/24"})
    peer = rig.peer
    try:
        rig.d.cli("create", "vxlan", "200", "ethp")
        rig.d.cli("create", "vxlanpeer", "200", PEER_IP)
        rig.ok("POST", "/config/ipv4address", {"dev": "vxlan200", "ipAddress": "10.0.200.1/24"})
        peer.run(f"ip link add vxlan200 type vxlan id 200 local {PEER_IP} dev eth0 "
                 "dstport 8472")
        peer.run(f"bridge fdb append 00:00:00:00:00:00 dev vxlan200 dst {LB_IP}")
        peer.run("ip addr add 10.0.200.2/24 dev vxlan200")
        peer.run("ip link set vxlan200 up")

        assert rig.ok("GET", "/config/tunnel/vxlan/all")["vxlanAttr"] == [
            {"vxlanName": "vxlan200", "epIntf": "ethp", "vxlanID": 200, "peerIP": [PEER_IP]}]
        wait_until(lambda: rig.pings("10.0.200.2"), 10, what="ping over vxlan200")
        assert rig.tcp("10.0.200.2") == "peer 10.0.200.1"
        # it went through the tunnel: the peer's VXLAN device received it
        stats = json.loads(peer.run("ip -j -s link show vxlan200").stdout)[0]["stats64"]
        assert stats["rx"]["packets"] >= 2
        ports = {p["portName"]: p for p in rig.ok("GET", "/config/port/all")["portAttr"]}
        hw = ports["vxlan200"]["portHardwareInformation"]
        assert (hw["tunnelId"], hw["real"]) == (200, "ethp")
        assert ports["vxlan200"]["portSoftwareInformation"]["portType"] == 0x40

        rig.refused("POST", "/config/tunnel/vxlan", {"epIntf": "ethp", "vxlanID": 200}, 409)
        rig.refused("POST", "/config/tunnel/vxlan", {"epIntf": "ethv", "vxlanID": 201}, 400,
                    "no IPv4 address")
        rig.ok("DELETE", f"/config/tunnel/vxlan/200/peer/{PEER_IP}")
        rig.refused("DELETE", f"/config/tunnel/vxlan/200/peer/{PEER_IP}", None, 404)
        assert rig.ok("GET", "/config/tunnel/vxlan/all")["vxlanAttr"][0]["peerIP"] == []
    finally:
        rig.api("DELETE", "/config/tunnel/vxlan/200")
        peer.run("ip link del vxlan200", check=False)
        rig.api("DELETE", f"/config/ipv4address/{LB_IP}/24/dev/ethp")
    assert rig.lb.run("ip link show vxlan200", check=False).returncode != 0
