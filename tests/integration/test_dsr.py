"""DSR with real traffic: the replies go from the endpoints straight to the client, never through
the LB. L2 DSR to on-link endpoints, L3 DSR (IPIP) to endpoints one routed hop away.

    cl ── lb ──┬── be1, be2                     (on-link: L2 DSR, MACs only)
       │       └── rt ──┬── be3, be4             (routed: IPIP from the LB's 10.0.13.1)
       └── rbN ─────────┴── each beN's `ret` link: the endpoints' only route to the client

Every endpoint holds the VIP on lo (arp_ignore/arp_announce as a DSR endpoint must), be3/be4
decapsulate with a TC program (this kernel has no ipip module). The client accepts replies from
the VIP on its rbN links (rp_filter off). A TCP connection to VIP:port only completes with
segments from VIP:port, and a UDP answer's source is checked, so "the client sees the VIP" is
observed; "the LB never sees a reply" is its endpoint-side interface counters, next to the
client's return-link counters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest

from pyloxi.datapath.ebpf.counters import datapath_stats
from pyloxi.datapath.ebpf.libbpf.maps import Map
from pyloxi.testing.lab import LbTopology, cleanup_stale
from pyloxi.testing.lab.netns import Netns
from pyloxi.testing.lab.topology import CLIENT_IP, LB_CLIENT_IP, ROUTED_VIP, wait_listening

from .conftest import DaemonHandle

DECAP_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpf", "ipip_decap.bpf.c")
PORT = 8080
L2_EPS, L3_EPS = ("be1", "be2"), ("be3", "be4")
LB_TUNNEL_SRC = "10.0.13.1"
# IPv6 (L2 DSR to be1/be2): client fd00:1::2, LB fd00:1::1 and fd00:1N::1, beN fd00:1N::2,
# return links fd01:N::/64
VIP6, CLIENT_IP6 = "fd00:20::100", "fd00:1::2"
EP_IPS = {"be1": "10.0.11.2", "be2": "10.0.12.2", "be3": "10.0.23.2", "be4": "10.0.24.2"}
EP_IPS6 = {"be1": "fd00:11::2", "be2": "fd00:12::2"}

# Each connection uploads `size` bytes, half-closes, and reads the endpoint's answer:
# "<name> <address it saw> <bytes it got>". UDP: "<name> <source of the answer>".
_TCP_SERVER = """
import socket, sys, threading
name = sys.argv[2]
srv = socket.socket(socket.AF_INET6)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # both families
srv.bind(("::", int(sys.argv[1])))
srv.listen(256)
def serve(c, peer):
    n = 0
    while chunk := c.recv(65536):
        n += len(chunk)
    seen = peer[0].removeprefix("::ffff:")
    c.sendall(f"{name} {seen} {n}\\n".encode())
    c.close()
while True:
    c, peer = srv.accept()
    threading.Thread(target=serve, args=(c, peer), daemon=True).start()
"""

_UDP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[3], int(sys.argv[1])))  # the VIP: answers leave from it
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(sys.argv[2].encode() + b" " + data, peer)
"""

_CLIENT = """
import json, socket, sys
proto, vip = sys.argv[1], sys.argv[2]
port, n, size = (int(a) for a in sys.argv[3:6])
out = []
for i in range(n):
    if proto == "tcp":
        s = socket.create_connection((vip, port), timeout=10)
        peer = s.getpeername()[0]
        s.sendall(b"x" * size)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        name, seen, got = data.decode().split()
        out.append({"ep": name, "seen": seen, "bytes": int(got), "from": peer})
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(10)
        s.sendto(b"q" * size, (vip, port))
        data, src = s.recvfrom(65535)
        out.append({"ep": data.split()[0].decode(), "bytes": len(data.split()[1]),
                    "from": f"{src[0]}:{src[1]}"})
    s.close()
print(json.dumps(out))
"""


class DsrTopology(LbTopology):
    """The lab of this module (see the module docstring); `backends` are be1..be4."""

    def _build(self, n: int) -> None:
        lab = self.lab
        self.client: Netns = lab.netns("cl")
        self.lb: Netns = lab.netns("lb")
        self.rt: Netns = lab.netns("rt")
        self.backends: list[Netns] = []
        for ns in (self.client, self.lb):
            ns.sysctl("net.ipv6.conf.default.accept_dad", 0)
        lab.link(self.client, "eth0", f"{CLIENT_IP}/24", self.lb, "eth0", f"{LB_CLIENT_IP}/24")
        self.client.run(f"ip route add default via {LB_CLIENT_IP}")
        self.client.run(f"ip -6 addr add {CLIENT_IP6}/64 dev eth0 nodad")
        self.lb.run("ip -6 addr add fd00:1::1/64 dev eth0 nodad")
        self.client.run("ip -6 route add default via fd00:1::1")
        self.lb.sysctl("net.ipv6.conf.all.forwarding", 1)
        lab.link(self.lb, "eth3", f"{LB_TUNNEL_SRC}/24", self.rt, "eth0", "10.0.13.2/24")
        decap = os.path.join(self.tmp.name, "ipip_decap.o")
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I",
                        f"/usr/include/{os.uname().machine}-linux-gnu", "-c", DECAP_SRC,
                        "-o", decap], check=True)
        for i in range(1, n + 1):
            be = lab.netns(f"be{i}")
            be.sysctl("net.ipv6.conf.default.accept_dad", 0)
            if i <= 2:  # on-link to the LB, both families
                lab.link(be, "eth0", f"10.0.{10 + i}.2/24", self.lb, f"eth{i}",
                         f"10.0.{10 + i}.1/24")
                be.run(f"ip -6 addr add fd00:{10 + i}::2/64 dev eth0 nodad")
                self.lb.run(f"ip -6 addr add fd00:{10 + i}::1/64 dev eth{i} nodad")
            else:  # behind the router
                lab.link(be, "eth0", f"10.0.{20 + i}.2/24", self.rt, f"eth{i}",
                         f"10.0.{20 + i}.1/24")
                self.lb.run(f"ip route add 10.0.{20 + i}.0/24 via 10.0.13.2")
                be.run(f"ip route add 10.0.13.0/24 via 10.0.{20 + i}.1")
                be.run("tc qdisc add dev eth0 clsact")
                be.run(f"tc filter add dev eth0 ingress bpf direct-action obj {decap} sec tc")
            # the return link: the endpoint's route to the client, bypassing the LB
            lab.link(be, "ret", f"10.1.{i}.2/24", self.client, f"rb{i}", f"10.1.{i}.1/24")
            be.run(f"ip route add 10.0.1.0/24 via 10.1.{i}.1")
            be.run(f"ip addr add {ROUTED_VIP}/32 dev lo")
            if i <= 2:
                be.run(f"ip -6 addr add fd01:{i}::2/64 dev ret nodad")
                self.client.run(f"ip -6 addr add fd01:{i}::1/64 dev rb{i} nodad")
                be.run(f"ip -6 route add fd00:1::/64 via fd01:{i}::1")
                be.run(f"ip -6 addr add {VIP6}/128 dev lo")
            for key, value in (("net.ipv4.conf.all.arp_ignore", 1),
                               ("net.ipv4.conf.all.arp_announce", 2)):
                be.sysctl(key, value)
            for dev in ("all", "default", "eth0", "ret", "lo"):
                be.sysctl(f"net.ipv4.conf.{dev}.rp_filter", 0)
            self.backends.append(be)
        for dev in ("all", "default", "eth0", *(f"rb{i}" for i in range(1, n + 1))):
            self.client.sysctl(f"net.ipv4.conf.{dev}.rp_filter", 0)
        for ns in (self.lb, self.rt):
            for key, value in (("net.ipv4.ip_forward", 1), ("net.ipv4.conf.all.rp_filter", 0),
                               ("net.ipv4.conf.default.rp_filter", 0)):
                ns.sysctl(key, value)
        for ns in (self.client, self.lb, self.rt, *self.backends):
            ns.sysctl("net.ipv4.ip_local_port_range", "10000 60999")
            ns.unlimit_icmp()

    def start_servers(self) -> None:
        for i, be in enumerate(self.backends, 1):
            be.popen([sys.executable, "-c", _TCP_SERVER, str(PORT), f"be{i}"])
            be.popen([sys.executable, "-c", _UDP_SERVER, str(PORT), f"be{i}", ROUTED_VIP])
        for be in self.backends:
            wait_listening(be, PORT, "tcp")
            wait_listening(be, PORT, "udp")


@pytest.fixture(scope="module")
def dsr_lb() -> Iterator[DaemonHandle]:
    cleanup_stale()
    topo = DsrTopology(4)
    try:
        topo.start_servers()
        d = DaemonHandle(topo, "dsr")
        d.start()
        try:
            yield d
        finally:
            d.stop()
    finally:
        topo.close()


@pytest.fixture
def lb(dsr_lb: DaemonHandle) -> Iterator[DaemonHandle]:
    dsr_lb.cli("delete", "lb", "--all", check=False)
    yield dsr_lb
    dsr_lb.cli("delete", "lb", "--all", check=False)


def rx_packets(ns: Netns, dev: str) -> int:
    return int(ns.run(["cat", f"/sys/class/net/{dev}/statistics/rx_packets"]).stdout)


def stats(lb: DaemonHandle) -> dict[str, int]:
    """The datapath's event counters, from the daemon's pinned stats_map."""
    m = Map.from_pin(os.path.join(lb.pin, "stats_map"))
    try:
        return datapath_stats(m)
    finally:
        m.close()


def traffic(lb: DaemonHandle, proto: str, n: int, size: int,
            vip: str = ROUTED_VIP) -> list[dict[str, object]]:
    out = lb.topo.client.run([sys.executable, "-c", _CLIENT, proto, vip, str(PORT),
                              str(n), str(size)], timeout=180)
    answers: list[dict[str, object]] = json.loads(out.stdout)
    return answers


def dsr_rule(lb: DaemonHandle, proto: str, eps: tuple[str, ...], vip: str = ROUTED_VIP) -> None:
    ips = EP_IPS6 if ":" in vip else EP_IPS
    lb.cli("create", "lb", vip, f"--{proto}={PORT}:{PORT}",
           f"--endpoints={','.join(f'{ips[e]}:1' for e in eps)}", "--mode=dsr", "--select=hash")


def check_dsr(lb: DaemonHandle, proto: str, eps: tuple[str, ...], n: int, size: int,
              lb_side: list[str], vip: str = ROUTED_VIP,
              client: str = CLIENT_IP) -> Counter[str]:
    """n exchanges; every answer from the VIP, both endpoints used, every byte arrived, and
    the LB's endpoint-side interfaces saw no reply. Returns answers per endpoint."""
    topo = lb.topo
    dsr_rule(lb, proto, eps, vip)
    lb_before = {dev: rx_packets(topo.lb, dev) for dev in lb_side}
    ret_before = sum(rx_packets(topo.client, f"rb{i}") for i in range(1, 5))
    st_before = stats(lb)
    answers = traffic(lb, proto, n, size, vip)
    st = {k: v - st_before[k] for k, v in stats(lb).items()}
    assert len(answers) == n
    spread = Counter(str(a["ep"]) for a in answers)
    assert set(spread) == set(eps), spread  # hash spreads over both
    for a in answers:
        assert a["bytes"] == size, a  # every byte went through the LB
        if proto == "tcp":
            assert a["seen"] == client and a["from"] == vip, a
        else:
            assert a["from"] == f"{vip}:{PORT}", a
    ret = sum(rx_packets(topo.client, f"rb{i}") for i in range(1, 5)) - ret_before
    seen_by_lb = {dev: rx_packets(topo.lb, dev) - lb_before[dev] for dev in lb_side}
    # replies came back on the return links (a TCP exchange: SYN-ACK, answer, FIN at least)...
    assert ret >= n * (3 if proto == "tcp" else 1), ret
    # ...and not through the LB: at most a few ARP / neighbour discovery packets on its
    # endpoint side
    assert sum(seen_by_lb.values()) <= 8, seen_by_lb
    # the LB's conntrack: forward-only DSR entries
    flows = lb.api("GET", "/config/conntrack/all").json()["ctAttr"]
    ours = [f for f in flows if f["destinationIP"] == vip]
    assert ours and all(f["conntrackAct"].startswith("ddsr-") for f in ours), ours[:3]
    assert all(f["sourceIP"] == client for f in ours)
    assert st["new_flow"] == n and st["reply_miss"] == 0 and st["promote"] == 0, st
    print(f"dsr {proto} {eps}: {dict(spread)}, {n} x {size} B, client return-link rx {ret}, "
          f"LB endpoint-side rx {seen_by_lb}, {len(ours)} conntrack entries, datapath "
          f"{ {k: v for k, v in st.items() if v} }")
    return spread


def test_l2_dsr_tcp_replies_bypass_the_lb(lb: DaemonHandle) -> None:
    check_dsr(lb, "tcp", L2_EPS, 30, 200_000, ["eth1", "eth2"])


def test_l2_dsr_over_ipv6_tcp_replies_bypass_the_lb(lb: DaemonHandle) -> None:
    check_dsr(lb, "tcp", L2_EPS, 30, 200_000, ["eth1", "eth2"], vip=VIP6, client=CLIENT_IP6)


def test_l2_dsr_udp_replies_bypass_the_lb(lb: DaemonHandle) -> None:
    check_dsr(lb, "udp", L2_EPS, 30, 1000, ["eth1", "eth2"])


def test_l3_dsr_ipip_tcp_replies_bypass_the_lb(lb: DaemonHandle) -> None:
    rt_before = rx_packets(lb.topo.rt, "eth0")  # type: ignore[attr-defined]
    check_dsr(lb, "tcp", L3_EPS, 30, 200_000, ["eth3"])
    # the router carried the uploads (IPIP from the LB): far more than a handful of packets
    assert rx_packets(lb.topo.rt, "eth0") - rt_before >= 30 * 5  # type: ignore[attr-defined]


def test_l3_dsr_ipip_udp_replies_bypass_the_lb(lb: DaemonHandle) -> None:
    check_dsr(lb, "udp", L3_EPS, 30, 1000, ["eth3"])


def test_l3_dsr_ipip_pmtu_without_offloads(lb: DaemonHandle) -> None:
    """Full-sized DF segments (the client's segmentation offloads off, so no GSO packet the
    encapsulation could re-segment) no longer fit once encapsulated: the LB answers
    'fragmentation needed' with the MTU left inside the tunnel, the client lowers its path MTU
    to the VIP and the uploads complete."""
    client = lb.topo.client
    client.run("ip route flush cache")
    client.run("ethtool -K eth0 tso off gso off")
    try:
        before = stats(lb)
        check_dsr(lb, "tcp", L3_EPS, 10, 200_000, ["eth3"])
        assert stats(lb)["icmp_sent"] > before["icmp_sent"]
        assert "mtu 1480" in client.run(f"ip route get {ROUTED_VIP}").stdout
    finally:
        client.run("ethtool -K eth0 tso on gso on", check=False)
