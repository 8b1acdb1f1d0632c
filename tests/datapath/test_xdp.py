"""The XDP path (bpf/include/pyloxi/xdp.h) under BPF_PROG_TEST_RUN: an established flow,
created by the TC program, forwarded by XDP with the bytes TC produces for the same packet and
the same counters; everything outside its scope passes (XDP_PASS) untouched, counting nothing.
New and half-open flows in XDP: test_xdp_flows.py."""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.layers.sctp import SCTP, SCTPChunkData
from scapy.packet import Packet, Raw

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.libbpf.testrun import prog_test_run
from pyloxi.datapath.ebpf.xdpattach import XdpPorts
from pyloxi.engine.program import ServiceProgram
from pyloxi.model.lb import NatMode

from .conftest import (
    CLIENT,
    CLIENT6,
    CLIENT_MAC,
    EP_MAC,
    EPS,
    EPS6,
    LB4_EP_SIDE,
    LB_MAC,
    TC_ACT_REDIRECT,
    VIP,
    VIP6,
    Harness,
    Result,
    csum6_ok,
    csum_ok,
)

XDP_DROP, XDP_PASS, XDP_REDIRECT = 1, 2, 4
LB6_EP_SIDE = "2001:db8:11::1"
FAMILIES = {4: (CLIENT, VIP, EPS[0], LB4_EP_SIDE), 6: (CLIENT6, VIP6, EPS6[0], LB6_EP_SIDE)}
TCP_P, UDP_P = 6, 17


def enable(h: Harness, *ifaces: str, native: bool = False) -> None:
    """XDP serves these interfaces (what XdpPorts.attach writes, without attaching); generic
    mode unless `native`."""
    mac = (ctypes.c_uint8 * 6)(*bytes.fromhex(LB_MAC.replace(":", "")))
    for name in ifaces or ("dp0", "dp1"):
        key = socket.if_nametoindex(name).to_bytes(4, "little")
        h.dp.maps["xdp_ports"].update(key, bytes(L.XdpPort(mac=mac, native=native, on=1)))


def xdp(h: Harness, pkt: Packet, iface: str | None = None) -> Result:
    """Run one frame through pyloxi_xdp as if it arrived on `iface` (default: by source)."""
    raw = bytes(pkt)
    if iface is None:
        src = pkt[IP].src if IP in pkt else pkt[IPv6].src if IPv6 in pkt else ""
        iface = "dp1" if src.startswith(("10.0.11.", "2001:db8:11:")) else "dp0"
    # struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    ctx = struct.pack("<6I", 0, len(raw), 0, socket.if_nametoindex(iface), 0, 0)
    out = prog_test_run(h.dp.xdp_prog_fd, raw, ctx=ctx, data_size_out=4096)
    return Result(out.retval, Ether(out.data))


def l3(fam: int, src: str, dst: str, ttl: int = 64) -> Packet:
    return IP(src=src, dst=dst, ttl=ttl) if fam == 4 else IPv6(src=src, dst=dst, hlim=ttl)


def checksums_ok(pkt: Ether) -> bool:
    return csum_ok(pkt) if IP in pkt else csum6_ok(pkt)


def snapshot(h: Harness, prog: ServiceProgram) -> dict[str, Any]:
    """Everything a forwarded packet may count or leave: per entry (packets, bytes, seen and
    window tracking), per endpoint, the event counters but XDP's own."""
    entries = {}
    for k, v in h.dp.maps["ct_map"].items():
        c = L.CtVal.from_buffer_copy(v)
        entries[k] = (c.packets, c.bytes, c.seen, c.td_end, c.td_edge, c.td_maxwin, c.td_flags,
                      c.td_lastack, c.fib_ifindex)
    stats = {k: n for k, n in h.dp.datapath_stats().items() if not k.startswith("xdp_")}
    sc = h.dp.service_counters(prog)
    return {"ct": entries, "half": sorted(k for k, _ in h.dp.maps["ct_half"].items()),
            "eps": [(e.packets, e.bytes, e.active_flows) for e in sc.endpoints], "stats": stats}


def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What changed from a to b: counters as differences, the rest as its new value."""
    ct = {k: (b["ct"][k][0] - v[0], b["ct"][k][1] - v[1], *b["ct"][k][2:])
          for k, v in a["ct"].items()}
    eps = [(q[0] - p[0], q[1] - p[1], q[2]) for p, q in zip(a["eps"], b["eps"], strict=True)]
    return {"ct": ct, "eps": eps, "half": b["half"], "stats": b["stats"]}


class Flow:
    """A flow opened and established by the TC program: client -> VIP and endpoint -> LB
    packets of it, built from what TC sent the endpoint."""

    def __init__(self, h: Harness, fam: int, proto: int, sport: int = 40000) -> None:
        self.fam, self.proto, self.sport = fam, proto, sport
        self.client, self.vip, _, _ = FAMILIES[fam]
        first = self.client_pkt(flags="S", seq=1000) if proto == TCP_P else self.client_pkt()
        out = h.run(first)
        assert out.retval == TC_ACT_REDIRECT, out.retval
        ip = out.pkt[IP] if fam == 4 else out.pkt[IPv6]
        l4 = out.pkt[TCP] if proto == TCP_P else out.pkt[UDP]
        self.ep, self.nat_src, self.ep_port, self.nat_sport = ip.dst, ip.src, l4.dport, l4.sport
        if proto == TCP_P:
            assert h.run(self.ep_pkt(flags="SA", seq=5000, ack=1001)).retval == TC_ACT_REDIRECT
            assert h.run(self.client_pkt(seq=1001, ack=5001)).retval == TC_ACT_REDIRECT
        else:
            assert h.run(self.ep_pkt()).retval == TC_ACT_REDIRECT

    def client_pkt(self, payload: bytes = b"", flags: str = "A", seq: int = 1001,
                   ack: int = 5001, ttl: int = 64) -> Ether:
        return Ether(src=CLIENT_MAC, dst=LB_MAC) / l3(self.fam, self.client, self.vip, ttl) / \
            self._l4(self.sport, 80, flags, seq, ack) / payload

    def ep_pkt(self, payload: bytes = b"", flags: str = "A", seq: int = 5001,
               ack: int = 1001) -> Ether:
        return Ether(src=EP_MAC, dst=LB_MAC) / l3(self.fam, self.ep, self.nat_src) / \
            self._l4(self.ep_port, self.nat_sport, flags, seq, ack) / payload

    def _l4(self, sport: int, dport: int, flags: str, seq: int, ack: int) -> Packet:
        if self.proto == TCP_P:
            return TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=65535)
        return UDP(sport=sport, dport=dport)


def service(h: Harness, fam: int, proto: int, mode: NatMode) -> ServiceProgram:
    _, vip, ep, lb_side = FAMILIES[fam]
    snat = lb_side if mode == NatMode.ONEARM else None
    return h.service(vip=vip, eps=[ep], proto=proto, port=80, target=8080, mode=mode, snat=snat)


MODES = [NatMode.DEFAULT, NatMode.ONEARM, NatMode.FULLNAT]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name.lower())
@pytest.mark.parametrize("proto", [TCP_P, UDP_P], ids=["tcp", "udp"])
@pytest.mark.parametrize("fam", [4, 6], ids=["v4", "v6"])
def test_established_packet_as_tc_forwards_it(h: Harness, fam: int, proto: int,
                                              mode: NatMode) -> None:
    prog = service(h, fam, proto, mode)
    flow = Flow(h, fam, proto)
    enable(h)
    for pkt in (flow.client_pkt(b"GET / HTTP/1.0\r\n\r\n"), flow.ep_pkt(b"HTTP/1.0 200 OK\r\n"),
                flow.client_pkt(b"x" * 1001), flow.ep_pkt(b"odd")):
        s0 = snapshot(h, prog)
        by_tc = h.run(pkt)
        s1 = snapshot(h, prog)
        by_xdp = xdp(h, pkt)
        s2 = snapshot(h, prog)
        assert by_tc.retval == TC_ACT_REDIRECT and by_xdp.retval == XDP_REDIRECT
        # the same bytes: addresses, ports, TTL, checksums, MACs
        assert bytes(by_xdp.pkt) == bytes(by_tc.pkt)
        assert checksums_ok(by_xdp.pkt)
        assert delta(s1, s2) == delta(s0, s1)   # the same counting, the same tracking
        assert delta(s1, s2)["eps"][0][:2] == (1, len(pkt))
    assert h.dp.datapath_stats()["xdp_fwd"] == 4


@pytest.mark.parametrize("fam", [4, 6], ids=["v4", "v6"])
def test_checksum_edges_match_tc(h: Harness, fam: int) -> None:
    """Payloads chosen so the rewritten checksum lands on 0 (TCP) or 0 -> 0xffff (UDP), and a
    UDP packet sent without a checksum (IPv4: stays 0): byte for byte as TC."""
    for proto in (TCP_P, UDP_P):
        h.service(vip=FAMILIES[fam][1], eps=[FAMILIES[fam][2]], proto=proto, port=80,
                  target=8080)
    enable(h)
    tcp, udp = Flow(h, fam, TCP_P), Flow(h, fam, UDP_P)
    for flow in (tcp, udp):
        base = flow.client_pkt(b"\x00\x00abcd")
        out = h.run(base).pkt
        l4 = out[TCP] if flow.proto == TCP_P else out[UDP]
        # adding the output's checksum to a payload word makes the new output's sum 0xffff
        pkt = flow.client_pkt(l4.chksum.to_bytes(2, "big") + b"abcd")
        by_tc, by_xdp = h.run(pkt), xdp(h, pkt)
        assert by_xdp.retval == XDP_REDIRECT and bytes(by_xdp.pkt) == bytes(by_tc.pkt)
        got = (by_tc.pkt[TCP] if flow.proto == TCP_P else by_tc.pkt[UDP]).chksum
        assert got in (0, 0xFFFF) and checksums_ok(by_xdp.pkt)
    if fam == 4:
        raw = bytearray(bytes(udp.client_pkt(b"nocsum")))
        raw[14 + 20 + 6: 14 + 20 + 8] = b"\x00\x00"
        by_tc, by_xdp = h.run(Ether(bytes(raw))), xdp(h, Ether(bytes(raw)))
        assert by_xdp.retval == XDP_REDIRECT and by_xdp.pkt[UDP].chksum == 0
        assert bytes(by_xdp.pkt) == bytes(by_tc.pkt)


def test_window_tracking_and_aging_as_tc(h: Harness) -> None:
    """Two flows, the same segments: one forwarded by TC, the other by XDP, leave the same
    tracking state; XDP stamps last-seen as TC does (what aging reads)."""
    h.service(eps=[EPS[0]])
    enable(h)
    a, b = Flow(h, 4, TCP_P, sport=41000), Flow(h, 4, TCP_P, sport=42000)
    seq_c, seq_e = 1001, 5001
    for i in range(6):
        data = bytes(100 + 37 * i)
        for flow, run in ((a, h.run), (b, lambda p: xdp(h, p))):
            assert run(flow.client_pkt(data, flags="PA", seq=seq_c, ack=seq_e)).retval in (
                TC_ACT_REDIRECT, XDP_REDIRECT)
            assert run(flow.ep_pkt(data[:50], flags="PA", seq=seq_e,
                                   ack=seq_c + len(data))).retval in (
                TC_ACT_REDIRECT, XDP_REDIRECT)
        seq_c, seq_e = seq_c + len(data), seq_e + 50

    def state(flow: Flow) -> list[tuple[int, ...]]:
        out = []
        for key in (L.ct_key(CLIENT, VIP, flow.sport, 80, TCP_P),
                    L.ct_key(flow.ep, flow.nat_src, flow.ep_port, flow.nat_sport, TCP_P)):
            c = L.CtVal.from_buffer_copy(h.dp.maps["ct_map"].lookup(bytes(key)) or b"")
            out.append((c.packets, c.bytes, c.seen, c.td_end,
                        c.td_edge, c.td_maxwin, c.td_flags, c.td_wscale, c.td_lastack))
        return out

    assert state(a) == state(b)
    assert h.dp.datapath_stats()["xdp_fwd"] == 12
    # aging: a last-seen older than a second is stamped anew
    key = bytes(L.ct_key(CLIENT, VIP, b.sport, 80, TCP_P))
    val = L.CtVal.from_buffer_copy(h.dp.maps["ct_map"].lookup(key) or b"")
    val.last_ns = 1
    h.dp.maps["ct_map"].update(key, bytes(val))
    assert xdp(h, b.client_pkt(flags="A", seq=seq_c, ack=seq_e)).retval == XDP_REDIRECT
    assert L.CtVal.from_buffer_copy(h.dp.maps["ct_map"].lookup(key) or b"").last_ns > 1


def _pass_cases() -> list[tuple[str, Callable[[Harness], Ether]]]:
    """(name, make): make sets up what the case needs (through TC) and returns the frame."""

    cases: list[tuple[str, Callable[[Harness], Ether]]] = []

    def case(name: str) -> Callable[[Callable[[Harness], Ether]], Callable[[Harness], Ether]]:
        def add(fn: Callable[[Harness], Ether]) -> Callable[[Harness], Ether]:
            cases.append((name, fn))
            return fn
        return add

    def tcp_flow(h: Harness, fam: int = 4) -> Flow:
        service(h, fam, TCP_P, NatMode.DEFAULT)
        return Flow(h, fam, TCP_P)

    case("conntrack_miss")(lambda h: (service(h, 4, TCP_P, NatMode.DEFAULT),
                                      Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP)
                                      / TCP(sport=45000, dport=80, flags="A"))[1])

    for flags in ("S", "SA"):   # on an established flow: a restart, TC's
        case(f"tcp_{flags}")(lambda h, f=flags: tcp_flow(h).client_pkt(flags=f))

    case("ttl_1")(lambda h: tcp_flow(h).client_pkt(b"x", ttl=1))
    case("hop_limit_1")(lambda h: tcp_flow(h, 6).client_pkt(b"x", ttl=1))

    @case("fragment")
    def _(h: Harness) -> Ether:
        flow = tcp_flow(h)
        pkt = flow.client_pkt(b"y" * 64)
        pkt[IP].flags = "MF"
        return Ether(bytes(pkt))

    @case("too_big_for_cached_mtu")
    def _(h: Harness) -> Ether:
        return tcp_flow(h).client_pkt(b"z" * 1600)

    @case("partial_checksum")
    def _(h: Harness) -> Ether:
        flow = tcp_flow(h)
        pkt = flow.client_pkt(b"offloaded")
        ip = pkt[IP]
        seed = (int.from_bytes(socket.inet_aton(ip.src), "big") >> 16) + \
            (int.from_bytes(socket.inet_aton(ip.src), "big") & 0xFFFF) + \
            (int.from_bytes(socket.inet_aton(ip.dst), "big") >> 16) + \
            (int.from_bytes(socket.inet_aton(ip.dst), "big") & 0xFFFF) + 6 + len(ip[TCP])
        while seed >> 16:
            seed = (seed & 0xFFFF) + (seed >> 16)
        pkt[TCP].chksum = seed
        return Ether(bytes(pkt))

    @case("icmp_error")
    def _(h: Harness) -> Ether:
        flow = tcp_flow(h)
        inner = bytes(flow.client_pkt()[IP])[:28]
        return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP) / ICMP(
            type=3, code=4) / Raw(inner)

    @case("sctp")
    def _(h: Harness) -> Ether:
        return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP) / SCTP(
            sport=5000, dport=80) / SCTPChunkData(data=b"d")

    case("arp")(lambda h: Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        pdst=VIP, psrc=CLIENT))

    @case("other_host_mac")
    def _(h: Harness) -> Ether:
        pkt = tcp_flow(h).client_pkt(b"x")
        pkt[Ether].dst = "02:00:00:00:99:99"
        return pkt

    @case("stale_next_hop")
    def _(h: Harness) -> Ether:
        flow = tcp_flow(h)
        key = bytes(L.ct_key(CLIENT, VIP, flow.sport, 80, TCP_P))
        val = L.CtVal.from_buffer_copy(h.dp.maps["ct_map"].lookup(key) or b"")
        val.fib_tick = 0   # cached long ago: TC looks the route up again
        h.dp.maps["ct_map"].update(key, bytes(val))
        return flow.client_pkt(b"x")

    return cases


PASS_CASES = _pass_cases()


@pytest.mark.parametrize("make", [m for _, m in PASS_CASES], ids=[n for n, _ in PASS_CASES])
def test_outside_the_fast_path_passes_untouched(h: Harness,
                                                make: Callable[[Harness], Ether]) -> None:
    enable(h)
    pkt = make(h)
    progs = [p for p in h.dp._progs.values() if p is not None]
    before = [snapshot(h, p) for p in progs], dict(h.dp.maps["ct_map"].items())
    raw = bytes(pkt)
    out = xdp(h, pkt)
    assert out.retval == XDP_PASS
    assert bytes(out.pkt) == raw
    assert ([snapshot(h, p) for p in progs], dict(h.dp.maps["ct_map"].items())) == before
    assert h.dp.datapath_stats()["xdp_fwd"] == 0


def test_half_closed_flow_other_side_as_tc(h: Harness) -> None:
    """After the client's FIN the endpoint may still send (a half-close): TC treats those
    segments as any other (the partner's FIN changes nothing for them), so does XDP, with the
    same bytes and counts; the FIN itself too."""
    prog = service(h, 4, TCP_P, NatMode.DEFAULT)
    flow = Flow(h, 4, TCP_P)
    enable(h)
    for pkt in (flow.client_pkt(flags="FA"), flow.ep_pkt(b"rest of the answer", flags="PA",
                                                          ack=1002)):
        s0 = snapshot(h, prog)
        by_tc = h.run(pkt)
        s1 = snapshot(h, prog)
        by_xdp = xdp(h, pkt)
        assert by_xdp.retval == XDP_REDIRECT and bytes(by_xdp.pkt) == bytes(by_tc.pkt)
        assert delta(s1, snapshot(h, prog)) == delta(s0, s1)


def test_interface_not_served_passes(h: Harness) -> None:
    service(h, 4, TCP_P, NatMode.DEFAULT)
    flow = Flow(h, 4, TCP_P)
    pkt = flow.client_pkt(b"x")
    assert xdp(h, pkt).retval == XDP_PASS   # no xdp_ports entry: XDP is off there
    # an entry that is not `on` (the array's zeroed ones): off, even for a frame to its MAC
    h.dp.maps["xdp_ports"].update(socket.if_nametoindex("dp0").to_bytes(4, "little"),
                                  bytes(L.XdpPort(mac=(ctypes.c_uint8 * 6)(*bytes.fromhex(
                                      LB_MAC.replace(":", ""))))))
    assert xdp(h, pkt).retval == XDP_PASS
    enable(h, "dp0")
    assert xdp(h, pkt).retval == XDP_REDIRECT
    assert xdp(h, flow.ep_pkt(b"y")).retval == XDP_PASS   # dp1 not served


def test_native_port_redirects_only_to_a_native_port(h: Harness) -> None:
    """A frame received in native mode may only be redirected to a port in native mode (the
    target driver's XDP transmit); generic mode redirects anywhere. Else TC forwards it."""
    service(h, 4, TCP_P, NatMode.DEFAULT)
    flow = Flow(h, 4, TCP_P)
    pkt = flow.client_pkt(b"x")   # dp0 -> dp1
    enable(h, "dp0", native=True)
    assert xdp(h, pkt).retval == XDP_PASS   # dp1 not served
    enable(h, "dp1")
    assert xdp(h, pkt).retval == XDP_PASS   # dp1 generic
    enable(h, "dp1", native=True)
    assert xdp(h, pkt).retval == XDP_REDIRECT
    h.dp.maps["xdp_ports"].update(socket.if_nametoindex("dp1").to_bytes(4, "little"),
                                  bytes(L.XdpPort()))   # off
    enable(h, "dp0")
    assert xdp(h, pkt).retval == XDP_REDIRECT   # generic: to any device


def test_mirror_or_policer_configured_passes(h: Harness) -> None:
    service(h, 4, TCP_P, NatMode.DEFAULT)
    flow = Flow(h, 4, TCP_P)
    enable(h)
    pkt = flow.client_pkt(b"x")
    h.dp.maps["mirr_gate"].update((0).to_bytes(4, "little"), bytes(L.MirrGate(ports=1)))
    assert xdp(h, pkt).retval == XDP_PASS
    h.dp.maps["mirr_gate"].update((0).to_bytes(4, "little"), bytes(L.MirrGate()))
    h.dp.maps["pol_cfg_map"].update((0).to_bytes(4, "little"), bytes(L.PolCfg(nports=1)))
    assert xdp(h, pkt).retval == XDP_PASS
    # endpoint and client policers' buckets are TC's too
    for cfg in (L.PolCfg(nclients=1), L.PolCfg(neps=1)):
        h.dp.maps["pol_cfg_map"].update((0).to_bytes(4, "little"), bytes(cfg))
        assert xdp(h, pkt).retval == XDP_PASS
    h.dp.maps["pol_cfg_map"].update((0).to_bytes(4, "little"), bytes(L.PolCfg()))
    assert xdp(h, pkt).retval == XDP_REDIRECT


def test_partial_checksum_counted(h: Harness) -> None:
    make = dict(PASS_CASES)["partial_checksum"]
    enable(h)
    pkt = make(h)
    assert xdp(h, pkt).retval == XDP_PASS
    assert h.dp.datapath_stats()["xdp_partial"] == 1
    # TC forwards it (its helper knows the skb's checksum state)
    assert h.run(pkt).retval == TC_ACT_REDIRECT


def pseudo_seed(pkt: Ether) -> int:
    """What a sender leaving the L4 checksum to the device writes (CHECKSUM_PARTIAL): the
    folded pseudo-header sum, not complemented."""
    if IP in pkt:
        ip, l4 = pkt[IP], pkt[IP].payload
        words = socket.inet_aton(ip.src) + socket.inet_aton(ip.dst)
        total = ip.proto + len(l4)
    else:
        ip, l4 = pkt[IPv6], pkt[IPv6].payload
        words = socket.inet_pton(socket.AF_INET6, ip.src) + socket.inet_pton(
            socket.AF_INET6, ip.dst)
        total = ip.nh + len(l4)
    seed = sum(int.from_bytes(words[i:i + 2], "big") for i in range(0, len(words), 2)) + total
    while seed >> 16:
        seed = (seed & 0xFFFF) + (seed >> 16)
    return seed


@pytest.mark.parametrize("fam", [4, 6])
@pytest.mark.parametrize("proto", [TCP_P, UDP_P])
def test_partial_checksum_passes_to_tc_both_families(h: Harness, fam: int, proto: int) -> None:
    """A local sender's offload seed in the L4 checksum (veth): XDP cannot know the skb's
    checksum state, so it hands the packet to TC, counted; TC rewrites it."""
    service(h, fam, proto, NatMode.DEFAULT)
    flow = Flow(h, fam, proto)
    enable(h)
    pkt = flow.client_pkt(b"offloaded")
    l4 = pkt[TCP] if proto == TCP_P else pkt[UDP]
    l4.chksum = pseudo_seed(pkt)
    pkt = Ether(bytes(pkt))
    out = xdp(h, pkt)
    assert out.retval == XDP_PASS and bytes(out.pkt) == bytes(pkt)
    assert h.dp.datapath_stats()["xdp_partial"] == 1
    assert h.run(pkt).retval == TC_ACT_REDIRECT
    # the same packet with its full checksum is XDP's
    full = flow.client_pkt(b"offloaded")
    assert xdp(h, full).retval == XDP_REDIRECT


def _xdp_shown(iface: str) -> str:
    import subprocess
    return subprocess.run(["ip", "-d", "link", "show", "dev", iface], capture_output=True,
                          text=True, check=True).stdout


def served(ports: Any, key: bytes) -> bool:
    return bool(L.XdpPort.from_buffer_copy(ports.lookup(key) or bytes(8)).on)


def test_attach_modes_on_veth(h: Harness) -> None:
    """--datapath on the test's veths: auto leaves them to TC alone, xdp attaches generic XDP
    and enables it in xdp_ports, tc (a restarted daemon) takes an earlier program off."""
    ports = h.dp.maps["xdp_ports"]
    key = socket.if_nametoindex("dp0").to_bytes(4, "little")
    assert h.dp.xdp.attach("dp0", "auto") is None
    assert "xdpgeneric" not in _xdp_shown("dp0") and not served(ports, key)
    assert h.dp.xdp.attach("dp0", "xdp") == "generic"
    assert "xdpgeneric" in _xdp_shown("dp0")
    assert L.XdpPort.from_buffer_copy(ports.lookup(key) or b"").mac[:] == list(
        bytes.fromhex(LB_MAC.replace(":", "")))
    other = XdpPorts(h.dp.xdp_prog_fd, ports)   # another daemon's view: not its own attach
    assert other.attach("dp0", "tc") is None
    assert "xdpgeneric" not in _xdp_shown("dp0") and not served(ports, key)
    h.dp.xdp.attach("dp0", "xdp")
    assert other.attach("dp0", "auto") is None   # auto on veth: the earlier program goes too
    assert "xdpgeneric" not in _xdp_shown("dp0")
    # xdp-native: native on veth too (the operator vouches for NAPI on the peer), enabled as
    # native (redirects only to native ports); the generic program of an earlier run goes
    h.dp.xdp.attach("dp0", "xdp")
    assert h.dp.xdp.attach("dp0", "xdp-native") == "native"
    shown = _xdp_shown("dp0")
    assert "xdpgeneric" not in shown and "prog/xdp id" in shown, shown
    assert served(ports, key) and L.XdpPort.from_buffer_copy(ports.lookup(key) or b"").native
    assert h.dp.xdp.attach("dp0", "tc") is None
    assert "prog/xdp" not in _xdp_shown("dp0") and not served(ports, key)
