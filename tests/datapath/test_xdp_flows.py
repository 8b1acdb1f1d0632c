"""New and half-open flows in XDP (bpf/include/pyloxi/xdp.h) under BPF_PROG_TEST_RUN: a whole
exchange (TCP handshake and data, UDP, ICMP echo; DSR) played once through the TC program and
once, from empty conntrack tables, through the XDP program alone gives the same bytes on the
wire and leaves the same flows and counts. A new flow XDP cannot send on is handed to TC
half-open, its endpoint selected once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from pyloxi.datapath.ebpf import layout as L
from pyloxi.engine.firewall import FwRuleProgram
from pyloxi.engine.program import ServiceProgram
from pyloxi.model.lb import NatMode, Selection

from .conftest import (
    CLIENT_MAC,
    EP_MAC,
    EPS,
    GW_MAC,
    LB4_EP_SIDE,
    LB_MAC,
    ROUTED_EPS,
    TC_ACT_REDIRECT,
    VIP6,
    Harness,
    Result,
)
from .test_xdp import FAMILIES, XDP_PASS, XDP_REDIRECT, checksums_ok, enable, l3, xdp

TCP_P, UDP_P, ICMP_P = 6, 17, 1
SPORT = 50000   # in every NAT port range: the NAT source port is the client's in both runs
Run = Callable[[Ether], Result]


def service(h: Harness, fam: int, proto: int, mode: NatMode, n_eps: int = 1) -> ServiceProgram:
    _, vip, _, lb_side = FAMILIES[fam]
    eps = [FAMILIES[fam][2]] if n_eps == 1 else None
    snat = lb_side if mode == NatMode.ONEARM else None
    port, target = (0, 0) if proto == ICMP_P else (80, 8080)
    if mode == NatMode.DSR:
        return h.service(vip=vip, eps=eps, proto=proto, port=port, target=port, mode=mode,
                         sel=Selection.HASH)
    return h.service(vip=vip, eps=eps, proto=proto, port=port, target=target, mode=mode,
                     snat=snat)


def echo(fam: int, reply: bool, ident: int, seq: int) -> Packet:
    if fam == 4:
        return ICMP(type=0 if reply else 8, id=ident, seq=seq)
    return (ICMPv6EchoReply if reply else ICMPv6EchoRequest)(id=ident, seq=seq)


def play(h: Harness, fam: int, proto: int, run: Run, dsr: bool = False,
         end: str = "", ep_fam: int = 0) -> list[Result]:
    """A flow's exchange, each packet through `run`; the endpoint's packets (of `ep_fam`, the
    client's family unless NAT64) answer what the LB sent it. TCP: SYN (with window scaling),
    SYN-ACK, ACK, data both ways, then `end`: "fin" (FIN both ways, the last ACK), "rst" (the
    endpoint resets); UDP and echo: two rounds (the first reply establishes). DSR: the
    client's side only."""
    client, vip, _, _ = FAMILIES[fam]
    ep_fam = ep_fam or fam
    outs: list[Result] = []

    def send(pkt: Ether) -> Ether:
        out = run(pkt)
        outs.append(out)
        return out.pkt

    def to_lb(l4: Packet) -> Ether:
        return Ether(src=CLIENT_MAC, dst=LB_MAC) / l3(fam, client, vip) / l4

    ip_t = IP if ep_fam == 4 else IPv6
    if proto == TCP_P:
        first = send(to_lb(TCP(sport=SPORT, dport=80, flags="S", seq=1000, window=64240,
                               options=[("MSS", 1460), ("WScale", 7)])))
        ep, nat = first[ip_t].dst, first[ip_t].src
        sport, dport = first[TCP].dport, first[TCP].sport

        def from_ep(l4: Packet) -> Ether:
            return Ether(src=EP_MAC, dst=LB_MAC) / l3(ep_fam, ep, nat) / l4
        if not dsr:
            send(from_ep(TCP(sport=sport, dport=dport, flags="SA", seq=5000, ack=1001,
                             window=65160, options=[("MSS", 1460), ("WScale", 7)])))
        send(to_lb(TCP(sport=SPORT, dport=80, flags="A", seq=1001, ack=5001, window=502)))
        send(to_lb(TCP(sport=SPORT, dport=80, flags="PA", seq=1001, ack=5001, window=502)
                   / b"GET / HTTP/1.1\r\n\r\n"))
        if not dsr:
            send(from_ep(TCP(sport=sport, dport=dport, flags="PA", seq=5001, ack=1019,
                             window=509) / b"HTTP/1.1 200 OK\r\n"))
        if end == "fin":
            send(to_lb(TCP(sport=SPORT, dport=80, flags="FA", seq=1019, ack=5018, window=502)))
            send(from_ep(TCP(sport=sport, dport=dport, flags="FA", seq=5018, ack=1020,
                             window=509)))
            send(to_lb(TCP(sport=SPORT, dport=80, flags="A", seq=1020, ack=5019, window=502)))
        elif end == "rst":
            send(from_ep(TCP(sport=sport, dport=dport, flags="RA", seq=5018, ack=1019)))
        return outs
    for i in range(2):
        l4 = UDP(sport=SPORT, dport=80) / f"q{i}".encode() if proto == UDP_P else \
            echo(fam, False, SPORT, i)
        out = send(to_lb(l4))
        if dsr:
            continue
        ip = out[ip_t]
        if proto == UDP_P:
            back: Packet = UDP(sport=out[UDP].dport, dport=out[UDP].sport) / f"a{i}".encode()
        else:
            back = echo(ep_fam, True,
                        (out[ICMP] if ep_fam == 4 else out[ICMPv6EchoRequest]).id, i)
        send(Ether(src=EP_MAC, dst=LB_MAC) / l3(ep_fam, ip.dst, ip.src) / back)
    return outs


VOLATILE = {"created_ns", "last_ns", "fib_tick"}   # clocks: differ between any two runs


def flows(h: Harness) -> dict[str, dict[bytes, tuple[Any, ...]]]:
    """Both conntrack tables, every field of every entry but its time stamps."""
    def fields(raw: bytes) -> tuple[Any, ...]:
        v = L.CtVal.from_buffer_copy(raw)
        vals = (getattr(v, n) for n, _ in L.CtVal._fields_ if n not in VOLATILE)
        return tuple(x if isinstance(x, int) else bytes(x) for x in vals)
    return {t: {k: fields(v) for k, v in h.dp.maps[t].items()} for t in ("ct_map", "ct_half")}


def counts(h: Harness, prog: ServiceProgram) -> tuple[dict[str, int], list[tuple[int, ...]]]:
    sc = h.dp.service_counters(prog)
    return h.dp.datapath_stats(), [(e.packets, e.bytes, e.active_flows) for e in sc.endpoints]


def diff(a: tuple[dict[str, int], list[tuple[int, ...]]],
         b: tuple[dict[str, int], list[tuple[int, ...]]]) -> tuple[dict[str, int], list[Any]]:
    stats = {k: b[0][k] - v for k, v in a[0].items() if not k.startswith("xdp_")}
    return stats, [tuple(y - x for x, y in zip(p, q, strict=True))
                   for p, q in zip(a[1], b[1], strict=True)]


def flush(h: Harness) -> None:
    for table in ("ct_map", "ct_half"):
        for k in [k for k, _ in h.dp.maps[table].items()]:
            h.dp.maps[table].delete(k)


def tc_then_xdp(h: Harness, prog: ServiceProgram, fam: int, proto: int,
                dsr: bool = False, end: str = "", ep_fam: int = 0) -> list[Result]:
    """play() through TC, then from empty tables through XDP: the same bytes, flows, counts."""
    enable(h)
    c0 = counts(h, prog)
    by_tc = play(h, fam, proto, h.run, dsr, end, ep_fam)
    assert [r.retval for r in by_tc] == [TC_ACT_REDIRECT] * len(by_tc)
    c1, tc_flows = counts(h, prog), flows(h)
    flush(h)
    by_xdp = play(h, fam, proto, lambda p: xdp(h, p), dsr, end, ep_fam)
    assert [r.retval for r in by_xdp] == [XDP_REDIRECT] * len(by_xdp)
    assert [bytes(r.pkt) for r in by_xdp] == [bytes(r.pkt) for r in by_tc]
    assert all(checksums_ok(r.pkt) for r in by_xdp)
    assert flows(h) == tc_flows
    c2 = counts(h, prog)
    assert diff(c1, c2) == diff(c0, c1)
    assert (c2[0]["xdp_new"], c2[0]["xdp_fwd"]) == (1, len(by_xdp))
    return by_xdp


@pytest.mark.parametrize("mode", [NatMode.DEFAULT, NatMode.ONEARM, NatMode.FULLNAT],
                         ids=lambda m: m.name.lower())
@pytest.mark.parametrize("proto", [TCP_P, UDP_P, ICMP_P], ids=["tcp", "udp", "icmp"])
@pytest.mark.parametrize("fam", [4, 6], ids=["v4", "v6"])
def test_new_flow_in_xdp_as_in_tc(h: Harness, fam: int, proto: int, mode: NatMode) -> None:
    prog = service(h, fam, proto, mode)
    tc_then_xdp(h, prog, fam, proto)
    stats = h.dp.datapath_stats()
    assert stats["new_flow"] == 2 and stats["promote"] == 2   # once per run
    assert sum(1 for _ in h.dp.maps["ct_map"]) == 2 and not list(h.dp.maps["ct_half"].items())


@pytest.mark.parametrize("end", ["fin", "rst"])
@pytest.mark.parametrize("mode", [NatMode.DEFAULT, NatMode.FULLNAT], ids=lambda m: m.name.lower())
@pytest.mark.parametrize("fam", [4, 6], ids=["v4", "v6"])
def test_tcp_flow_ends_in_xdp_as_in_tc(h: Harness, fam: int, mode: NatMode, end: str) -> None:
    """FIN both ways and the last ACK, or the endpoint's reset: judged against the other
    direction's window and tracked as TC does."""
    prog = service(h, fam, TCP_P, mode)
    tc_then_xdp(h, prog, fam, TCP_P, end=end)
    seen = [L.CtVal.from_buffer_copy(v).seen for _, v in h.dp.maps["ct_map"].items()]
    assert any(s & (L.CT_FIN if end == "fin" else L.CT_RST) for s in seen)


def test_reset_outside_the_window_dropped_as_tc(h: Harness) -> None:
    prog = service(h, 4, TCP_P, NatMode.DEFAULT)
    enable(h)
    play(h, 4, TCP_P, lambda p: xdp(h, p))
    client, vip, _, _ = FAMILIES[4]
    blind = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=client, dst=vip) / TCP(
        sport=SPORT, dport=80, flags="R", seq=1019 + 10_000_000)
    before = flows(h)
    assert xdp(h, blind).retval == 1   # XDP_DROP, as TC's TC_ACT_SHOT
    assert h.run(blind).retval == 2
    assert h.dp.datapath_stats()["out_of_window"] == 2 and flows(h) == before
    assert h.dp.service_counters(prog).endpoints[0].active_flows == 1


@pytest.mark.parametrize("proto", [TCP_P, UDP_P], ids=["tcp", "udp"])
@pytest.mark.parametrize("fam", [4, 6], ids=["v4", "v6"])
def test_dsr_flow_in_xdp_as_in_tc(h: Harness, fam: int, proto: int) -> None:
    """L2 DSR: only the MACs and the TTL change; one forward-only entry."""
    prog = service(h, fam, proto, NatMode.DSR)
    out = tc_then_xdp(h, prog, fam, proto, dsr=True)
    ip = out[0].pkt[IP] if fam == 4 else out[0].pkt[IPv6]
    assert (ip.src, ip.dst) == FAMILIES[fam][:2] and out[0].pkt[Ether].dst == EP_MAC
    assert len(list(h.dp.maps["ct_half"].items())) == 1


def test_l3_dsr_flow_in_xdp_as_in_tc(hd: Harness) -> None:
    """IPIP toward a routed endpoint: the outer header XDP puts in front is TC's, byte for
    byte; a packet that fits the MTU only without it is TC's to answer."""
    prog = hd.service(mode=NatMode.DSR, sel=Selection.HASH, eps=ROUTED_EPS[:1], target=80)
    out = tc_then_xdp(hd, prog, 4, TCP_P, dsr=True)
    assert out[0].pkt[IP].proto == 4 and out[0].pkt[Ether].dst == GW_MAC
    client, vip, _, _ = FAMILIES[4]
    big = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=client, dst=vip, flags="DF") / TCP(
        sport=SPORT, dport=80, flags="A", seq=1019, ack=1) / (b"z" * (1490 - 40))
    raw = bytes(big)
    got = xdp(hd, big)
    assert got.retval == XDP_PASS and bytes(got.pkt) == raw


def syn(fam: int, sport: int = SPORT, dport: int = 80, flags: str = "S") -> Ether:
    client, vip, _, _ = FAMILIES[fam]
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / l3(fam, client, vip) / TCP(
        sport=sport, dport=dport, flags=flags, seq=1000)


def handed_over(h: Harness, pkt: Ether) -> Result:
    """XDP creates pkt's flow but leaves sending it to TC: it passes untouched, TC finds the
    flow half-open and sends the packet as TC alone would have (from empty tables)."""
    raw = bytes(pkt)
    out = xdp(h, pkt)
    assert out.retval == XDP_PASS and bytes(out.pkt) == raw
    stats = h.dp.datapath_stats()
    assert (stats["xdp_new"], stats["new_flow"], stats["xdp_fwd"]) == (1, 1, 0)
    assert len(list(h.dp.maps["ct_half"].items())) == 2
    by_tc = h.run(pkt)
    assert h.dp.datapath_stats()["new_flow"] == 1   # TC sent it on: no second flow
    flush(h)
    alone = h.run(pkt)
    assert (by_tc.retval, bytes(by_tc.pkt)) == (alone.retval, bytes(alone.pkt))
    return by_tc


@pytest.mark.parametrize(("proto", "end"), [(TCP_P, ""), (TCP_P, "fin"), (UDP_P, ""),
                                            (ICMP_P, "")], ids=["tcp", "tcp-fin", "udp", "icmp"])
def test_nat64_flow_in_xdp_as_in_tc(h: Harness, proto: int, end: str) -> None:
    """An IPv6 client, an IPv4 endpoint: XDP translates both ways (the frame 20 bytes shorter
    towards the endpoint, 20 longer back), TC's bytes."""
    port, target = (0, 0) if proto == ICMP_P else (80, 8080)
    prog = h.service(vip=VIP6, eps=EPS[:1], snat=LB4_EP_SIDE, proto=proto, port=port,
                     target=target)
    out = tc_then_xdp(h, prog, 6, proto, end=end, ep_fam=4)
    assert IP in out[0].pkt and IPv6 not in out[0].pkt and out[0].pkt[IP].dst == EPS[0]
    assert IPv6 in out[1].pkt and out[1].pkt[IPv6].dst == FAMILIES[6][0]


def test_nat64_untranslatable_handed_to_tc(h: Harness) -> None:
    """A packet xlate.h refuses (an IPv6 extension header) is TC's to refuse, as TC alone."""
    h.service(vip=VIP6, eps=EPS[:1], snat=LB4_EP_SIDE)
    enable(h)
    client, vip, _, _ = FAMILIES[6]
    pkt = Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=client, dst=vip) / \
        IPv6ExtHdrDestOpt() / TCP(sport=SPORT, dport=80, flags="S", seq=1000)
    out = handed_over(h, pkt)
    assert out.retval == 2 and h.dp.datapath_stats()["xlate_refused"] == 2


def test_nat64_reply_without_udp_checksum_handed_to_tc(h: Harness) -> None:
    """IPv6 needs the full UDP checksum an IPv4 datagram may leave out: TC sums it."""
    prog = h.service(vip=VIP6, eps=EPS[:1], snat=LB4_EP_SIDE, proto=UDP_P, port=53,
                     target=5353)
    enable(h)
    client, vip, _, _ = FAMILIES[6]
    out = xdp(h, Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=client, dst=vip) /
              UDP(sport=SPORT, dport=53) / b"query")
    assert out.retval == XDP_REDIRECT and out.pkt[IP].dst == EPS[0]
    rep = Ether(src=EP_MAC, dst=LB_MAC) / IP(src=EPS[0], dst=LB4_EP_SIDE) / UDP(
        sport=5353, dport=out.pkt[UDP].sport, chksum=0) / b"answer"
    raw = bytes(rep)
    passed = xdp(h, rep)
    assert passed.retval == XDP_PASS and bytes(passed.pkt) == raw
    back = h.run(rep)
    assert back.retval == TC_ACT_REDIRECT and back.pkt[UDP].chksum != 0
    assert checksums_ok(back.pkt) and back.pkt[IPv6].dst == client
    assert h.dp.service_counters(prog).endpoints[0].packets == 2


def test_new_flow_too_big_for_the_next_hop_handed_to_tc(h: Harness) -> None:
    """A first UDP packet longer than the egress MTU: TC decides (here: the kernel fragments
    it, DF being clear); XDP routed it and kept the hop, nothing else."""
    service(h, 4, UDP_P, NatMode.DEFAULT)
    enable(h)
    client, vip, _, _ = FAMILIES[4]
    pkt = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=client, dst=vip) / UDP(
        sport=SPORT, dport=80) / (b"b" * 1600)
    handed_over(h, pkt)


def test_rr_selects_once_when_tc_sends(h: Harness) -> None:
    """A native port may only redirect to native ports: new flows from it are created in XDP
    and sent by TC; round robin still alternates (one selection per flow)."""
    h.service(eps=EPS[:2])
    enable(h, "dp0", native=True)
    enable(h, "dp1")
    got = []
    for i in range(4):
        pkt = syn(4, SPORT + i)
        assert xdp(h, pkt).retval == XDP_PASS
        out = h.run(pkt)
        assert out.retval == TC_ACT_REDIRECT
        got.append(out.pkt[IP].dst)
    assert got == [EPS[0], EPS[1], EPS[0], EPS[1]] or got == [EPS[1], EPS[0], EPS[1], EPS[0]]
    assert h.dp.datapath_stats()["xdp_new"] == 4 and h.dp.datapath_stats()["new_flow"] == 4


@pytest.mark.parametrize("mode", [NatMode.DEFAULT, NatMode.FULLNAT, NatMode.DSR],
                         ids=lambda m: m.name.lower())
def test_mid_stream_pickup_by_hash_as_tc(h: Harness, mode: NatMode) -> None:
    """A flow lost mid-stream (no entry, not a SYN) on a rule selecting by hash is picked up
    to the endpoint Maglev gives, as TC picks it up: liberal window, the same bytes."""
    vip, eps = FAMILIES[4][1], EPS[:3]
    prog = h.service(vip=vip, eps=eps, mode=mode, sel=Selection.HASH,
                     target=80 if mode == NatMode.DSR else 8080)
    enable(h)
    pkt = syn(4, flags="PA") / b"more of a request"
    by_tc = h.run(pkt)
    tc_flows = flows(h)
    flush(h)
    by_xdp = xdp(h, pkt)
    assert (by_tc.retval, by_xdp.retval) == (TC_ACT_REDIRECT, XDP_REDIRECT)
    assert bytes(by_xdp.pkt) == bytes(by_tc.pkt) and flows(h) == tc_flows
    stats = h.dp.datapath_stats()
    assert (stats["pickup"], stats["xdp_new"]) == (2, 1)
    assert sum(e.packets for e in h.dp.service_counters(prog).endpoints) == 2


def test_syn_again_as_tc(h: Harness) -> None:
    """A retransmitted SYN goes on in its flow; a SYN on a finished flow's tuple (a client
    reusing its port) ends that flow and opens a new one: in XDP as in TC, byte for byte."""
    service(h, 4, TCP_P, NatMode.DEFAULT)
    enable(h)
    first = xdp(h, syn(4))
    half = flows(h)["ct_half"]
    again = xdp(h, syn(4))
    assert again.retval == XDP_REDIRECT and bytes(again.pkt) == bytes(first.pkt)
    assert flows(h)["ct_half"].keys() == half.keys()
    flush(h)
    outs = {}
    for name, run in (("tc", h.run), ("xdp", lambda p: xdp(h, p))):
        play(h, 4, TCP_P, run, end="fin")
        before = h.dp.datapath_stats()
        outs[name] = run(syn(4))
        after = h.dp.datapath_stats()
        assert (after["syn_reuse"] - before["syn_reuse"], after["new_flow"] - before["new_flow"]) \
            == (1, 1)
        flush(h)
    assert (outs["tc"].retval, outs["xdp"].retval) == (TC_ACT_REDIRECT, XDP_REDIRECT)
    assert bytes(outs["xdp"].pkt) == bytes(outs["tc"].pkt)


def test_new_flows_outside_xdp_pass_untouched(h: Harness) -> None:
    """No flow is created in XDP where TC must decide: firewall rules live, a source the rule
    does not allow, no active endpoint, a lost flow's reply, a mid-stream segment."""
    client = FAMILIES[4][0]
    enable(h)

    def passes(pkt: Ether) -> None:
        raw = bytes(pkt)
        out = xdp(h, pkt)
        assert out.retval == XDP_PASS and bytes(out.pkt) == raw
        assert not list(h.dp.maps["ct_half"].items())
        assert h.dp.datapath_stats()["new_flow"] == 0

    h.service(allowed=("10.0.1.3/32",))
    passes(syn(4))
    h.service(port=81, active=[False])
    passes(syn(4, dport=81))
    h.service(port=82)
    h.dp.set_firewall([FwRuleProgram(id=1, src="10.9.9.9/32", dst="", sport=(0, 65535),
                                     dport=(0, 65535), proto=0, ifname="", allow=True, mark=0)])
    passes(syn(4, dport=82))
    h.dp.set_firewall([])
    passes(syn(4, dport=82, flags="A"))   # round robin: no pick-up (TC refuses it)
    passes(syn(4, dport=82, flags="RA"))  # never a flow on a reset
    passes(Ether(src=EP_MAC, dst=LB_MAC) / IP(src=EPS[0], dst=client) / TCP(
        sport=8080, dport=SPORT, flags="SA"))
    assert xdp(h, syn(4, dport=82)).retval == XDP_REDIRECT   # and then it may
