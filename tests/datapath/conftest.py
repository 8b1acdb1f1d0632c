"""Datapath tests: the compiled program under BPF_PROG_TEST_RUN, inside a namespace of the
test's own (so bpf_fib_lookup sees only routes and neighbours the test made)."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from pyloxi.datapath.ebpf.backend import EbpfDatapath
from pyloxi.datapath.ebpf.libbpf.testrun import prog_test_run
from pyloxi.engine.program import EndpointSlot, ServiceProgram
from pyloxi.model.lb import NatMode, Selection
from pyloxi.testing.lab.dpns import LB_MAC, datapath_netns

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OBJ = os.path.join(ROOT, "build", "lb.bpf.o")

TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7
CLIENT, CLIENT2, VIP = "10.0.1.2", "10.0.1.3", "20.0.0.100"
EPS = ["10.0.11.2", "10.0.11.3", "10.0.11.4"]
CLIENT_MAC, EP_MAC = "02:00:00:00:01:02", "02:00:00:00:11:02"
# IPv6: the same two subnets (client on dp0, endpoints on dp1)
CLIENT6, CLIENT6_2, VIP6 = "2001:db8:1::2", "2001:db8:1::3", "2001:db8:100::100"
EPS6 = ["2001:db8:11::2", "2001:db8:11::3", "2001:db8:11::4"]
LB4_EP_SIDE = "10.0.11.1"   # the LB's address toward the endpoints (onearm, NAT64 source)


# package scope: the test thread leaves the namespace once the datapath tests are done, so the
# tests after them run where they would alone (the host's network: e.g. the image build's
# package downloads)
@pytest.fixture(scope="package")
def netns() -> Iterator[str]:
    """Enter a fresh namespace with a client subnet and an endpoint subnet (static neighbours)."""
    with datapath_netns(f"pl{os.getpid()}-dptest", (
        f"ip neigh add {CLIENT} lladdr {CLIENT_MAC} dev dp0 nud permanent",
        f"ip neigh add {CLIENT2} lladdr 02:00:00:00:01:03 dev dp0 nud permanent",
        *(f"ip neigh add {ep} lladdr {EP_MAC} dev dp1 nud permanent" for ep in EPS),
        f"ip addr add {VIP}/32 dev lo",
        "sysctl -qw net.ipv6.conf.all.forwarding=1",
        "ip -6 addr add 2001:db8:1::1/64 dev dp0 nodad",
        "ip -6 addr add 2001:db8:11::1/64 dev dp1 nodad",
        f"ip -6 neigh add {CLIENT6} lladdr {CLIENT_MAC} dev dp0 nud permanent",
        f"ip -6 neigh add {CLIENT6_2} lladdr 02:00:00:00:01:03 dev dp0 nud permanent",
        *(f"ip -6 neigh add {ep} lladdr {EP_MAC} dev dp1 nud permanent" for ep in EPS6),
        f"ip -6 addr add {VIP6}/128 dev lo",
    )) as name:
        yield name


@dataclass
class Result:
    retval: int
    pkt: Ether


class Harness:
    def __init__(self, dp: EbpfDatapath) -> None:
        self.dp = dp
        self._next_id = 1

    def run(self, pkt: Ether, iface: str | None = None) -> Result:
        """Run one packet as if it arrived on `iface` (default: by source, dp0 or dp1)."""
        if iface is None:
            src = pkt[IP].src if IP in pkt else pkt[IPv6].src if IPv6 in pkt else ""
            iface = "dp1" if src.startswith(("10.0.11.", "2001:db8:11:")) else "dp0"
        ifindex = socket.if_nametoindex(iface)
        # struct __sk_buff (192 bytes): ingress_ifindex at 36, ifindex at 40
        ctx = struct.pack("<36xII", ifindex, ifindex).ljust(192, b"\0")
        out = prog_test_run(self.dp.prog_fd, bytes(pkt), ctx=ctx, data_size_out=4096)
        return Result(out.retval, Ether(out.data))

    def service(self, *, port: int = 80, proto: int = 6, eps: list[str] | None = None,
                target: int = 8080, mode: NatMode = NatMode.DEFAULT, sel: Selection = Selection.RR,
                slots: tuple[int, ...] | None = None, active: list[bool] | None = None,
                snat: str | None = None, port_max: int | None = None,
                allowed: tuple[str, ...] = (), weights: list[int] | None = None,
                vip: str = VIP, block: int = 0) -> ServiceProgram:
        eps = eps or EPS[:1]
        active = active or [True] * len(eps)
        weights = weights or [1] * len(eps)
        if snat is None and mode == NatMode.FULLNAT:
            snat = vip
        endpoints = tuple(EndpointSlot(ip, target, w, a, snat)
                          for ip, a, w in zip(eps, active, weights, strict=True))
        if slots is None:
            slots = tuple(i for i, a in enumerate(active) if a)
        prog = ServiceProgram(
            svc_id=self._next_id, name=f"t{self._next_id}", vip=vip, proto=proto, port_min=port,
            port_max=port if port_max is None else port_max, mode=mode, sel=sel,
            endpoints=endpoints, slots=slots, idle_timeout=240, allowed_sources=allowed,
            block=block)
        self._next_id += 1
        self.dp.install_service(prog)
        return prog


@pytest.fixture
def h(netns: str) -> Iterator[Harness]:
    pin = f"/sys/fs/bpf/pl{os.getpid()}-dp"
    dp = EbpfDatapath(pin, obj_path=OBJ)
    try:
        yield Harness(dp)
    finally:
        dp.destroy()


# DSR (test_dsr.py, test_xdp_flows.py): routed endpoints one hop behind GW get L3 DSR (IPIP)
# from the LB's dp1 address
GW, GW_MAC = "10.0.11.254", "02:00:00:00:11:fe"
ROUTED_EPS = ["10.0.21.2", "10.0.21.3"]


def tunnel_source(ip: str) -> str | None:
    """What host.netlink.tunnel_source answers in the test namespace (its netlink thread lives
    in another namespace): routed endpoints get IPIP from the LB's dp1 address."""
    return LB4_EP_SIDE if ip in ROUTED_EPS else None


@pytest.fixture
def hd(netns: str) -> Iterator[Harness]:
    """A harness whose datapath knows ROUTED_EPS (behind GW) as IPIP endpoints."""
    for cmd in (f"ip neigh replace {GW} lladdr {GW_MAC} dev dp1 nud permanent",
                f"ip route replace 10.0.21.0/24 via {GW} dev dp1"):
        subprocess.run(cmd.split(), check=True)
    pin = f"/sys/fs/bpf/pl{os.getpid()}-dsr"
    dp = EbpfDatapath(pin, obj_path=OBJ, dsr_tunnel_source=tunnel_source)
    try:
        yield Harness(dp)
    finally:
        dp.destroy()


def syn(src: str = CLIENT, sport: int = 40000, dport: int = 80, flags: str = "S",
        dst: str = VIP) -> Ether:
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=src, dst=dst, ttl=64) / TCP(
        sport=sport, dport=dport, flags=flags, seq=1000)


def csum_ok(pkt: Ether) -> bool:
    """True when scapy, recomputing every checksum, gets the same bytes."""
    raw = bytes(pkt[IP])
    fresh = IP(raw)
    del fresh.chksum
    if hasattr(fresh.payload, "chksum"):
        del fresh.payload.chksum
    return bytes(fresh) == raw


def csum6_ok(pkt: Ether) -> bool:
    """csum_ok for IPv6: the L4 checksum (pseudo-header included) as scapy computes it."""
    raw = bytes(pkt[IPv6])
    fresh = IPv6(raw)
    for field in ("chksum", "cksum"):
        if field in fresh.payload.fields:
            delattr(fresh.payload, field)
    return bytes(fresh) == raw


def ct_count(h: Harness) -> int:
    """Entries in both conntrack tables (established ct_map + half-open ct_half)."""
    return sum(1 for _ in h.dp.maps["ct_map"]) + sum(1 for _ in h.dp.maps["ct_half"])


def ep_answer(to_ep: Ether, flags: str, seq: int = 5000, ack: int | None = None) -> Ether:
    """The endpoint's answer to a packet the LB sent it (a SYN-ACK acknowledges the SYN)."""
    ip, tcp = to_ep[IP], to_ep[TCP]
    return Ether(src=EP_MAC, dst=LB_MAC) / IP(src=ip.dst, dst=ip.src, ttl=64) / TCP(
        sport=tcp.dport, dport=tcp.sport, flags=flags, seq=seq,
        ack=tcp.seq + 1 if ack is None else ack, window=65535)


def handshake(h: Harness, src: str = CLIENT, sport: int = 40000, dport: int = 80,
              dst: str = VIP) -> tuple[Ether, Ether]:
    """A complete three-way handshake through the LB (client seq 1000, endpoint seq 5000).
    Returns the SYN as sent to the endpoint and the SYN-ACK as sent back to the client."""
    out = Harness.run(h, syn(src=src, sport=sport, dport=dport, dst=dst))
    assert out.retval == TC_ACT_REDIRECT, out.retval
    back = h.run(ep_answer(out.pkt, "SA"))
    assert back.retval == TC_ACT_REDIRECT, back.retval
    ack = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=src, dst=dst, ttl=64) / TCP(
        sport=sport, dport=dport, flags="A", seq=1001, ack=5001, window=65535)
    assert h.run(ack).retval == TC_ACT_REDIRECT
    return out.pkt, back.pkt
