"""ICMP errors through the compiled program: translated back for NATed flows (every mode, both
directions), and generated ('time exceeded', 'fragmentation needed') quoting the pre-NAT packet."""

from __future__ import annotations

import struct
import subprocess
import time
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.libbpf.maps import possible_cpus
from pyloxi.model.lb import NatMode
from pyloxi.testing.lab.dpns import LB_MAC

from .conftest import (
    CLIENT,
    CLIENT_MAC,
    EP_MAC,
    EPS,
    TC_ACT_OK,
    TC_ACT_REDIRECT,
    VIP,
    Harness,
    csum_ok,
    syn,
)

ROUTER = "10.0.1.254"  # a router on the client side (reached through dp0)
LB_EP_SIDE = "10.0.11.1"  # the LB's own address toward the endpoints
MODES = [NatMode.DEFAULT, NatMode.ONEARM, NatMode.FULLNAT]
TC_ACT_SHOT = 2


def service(h: Harness, mode: NatMode, **kw: object) -> None:
    h.service(mode=mode, snat=LB_EP_SIDE if mode == NatMode.ONEARM else None, **kw)  # type: ignore[arg-type]


def reply(pkt_out: Ether, flags: str = "SA", ttl: int = 64, payload: bytes = b"",
          df: bool = False) -> Ether:
    ip, tcp = pkt_out[IP], pkt_out[TCP]
    return Ether(src=EP_MAC, dst=LB_MAC) / IP(
        src=ip.dst, dst=ip.src, ttl=ttl, flags="DF" if df else 0) / TCP(
        sport=tcp.dport, dport=tcp.sport, flags=flags, seq=5000, ack=tcp.seq + 1) / payload


def icmp_about(emitted: Ether, src: str, mac: str, type_: int = 3, code: int = 1,
               mtu: int = 0) -> Ether:
    """The ICMP error a host at `src` sends about a packet the LB emitted (quoted whole)."""
    quoted = bytes(emitted[IP])
    return Ether(src=mac, dst=LB_MAC) / IP(src=src, dst=emitted[IP].src, ttl=64) / ICMP(
        type=type_, code=code, nexthopmtu=mtu) / Raw(quoted)


def quote_of(pkt: Ether) -> bytes:
    """The quoted packet (scapy would read a long quote as RFC 4884 extensions)."""
    return bytes(pkt[IP])[20 + 8:]


def inner(pkt: Ether) -> IP:
    return IP(quote_of(pkt))


def all_csums_ok(pkt: Ether) -> bool:
    """Outer IP and ICMP checksums, and the quoted packet's own IP and L4 checksums."""
    flat = Ether(bytes(pkt)[:14]) / IP(bytes(pkt[IP]))
    outer_ip = IP(bytes(pkt[IP]))
    rebuilt = IP(bytes(outer_ip))
    del rebuilt.chksum
    rebuilt_icmp = ICMP(bytes(outer_ip[ICMP]))
    del rebuilt_icmp.chksum
    ok_ip = bytes(rebuilt)[:20] == bytes(outer_ip)[:20]
    ok_icmp = bytes(rebuilt_icmp) == bytes(outer_ip[ICMP])
    ok_inner = csum_ok(Ether() / inner(flat))
    return ok_ip and ok_icmp and ok_inner


def tuple_of(ip: IP) -> tuple[str, str, int, int]:
    l4 = ip[TCP] if TCP in ip else ip[UDP]
    return ip.src, ip.dst, l4.sport, l4.dport


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_error_from_endpoint_about_forwarded_packet(h: Harness, mode: NatMode) -> None:
    """Endpoint -> 'host unreachable' about the rewritten SYN: the client gets it about its own
    SYN to the VIP, from the VIP."""
    service(h, mode)
    sent = h.run(syn()).pkt
    err = icmp_about(sent, src=sent[IP].dst, mac=EP_MAC)
    out = h.run(err)
    assert out.retval == TC_ACT_REDIRECT
    assert (out.pkt[IP].src, out.pkt[IP].dst) == (VIP, CLIENT)
    assert out.pkt.dst == CLIENT_MAC and out.pkt[IP].ttl == 63
    assert tuple_of(inner(out.pkt)) == (CLIENT, VIP, 40000, 80)
    assert all_csums_ok(out.pkt)
    assert h.dp.datapath_stats()["icmp_xlate"] == 1


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_frag_needed_from_router_about_reply(h: Harness, mode: NatMode) -> None:
    """A router toward the client sends 'fragmentation needed' to the VIP about a reply: the
    endpoint gets it about the packet it sent, the router stays the source, the MTU is kept."""
    service(h, mode)
    sent = h.run(syn()).pkt
    back = h.run(reply(sent)).pkt
    err = icmp_about(back, src=ROUTER, mac=CLIENT_MAC, code=4, mtu=1400)
    out = h.run(err)
    assert out.retval == TC_ACT_REDIRECT
    assert (out.pkt[IP].src, out.pkt[IP].dst) == (ROUTER, EPS[0])
    assert out.pkt.dst == EP_MAC and out.pkt[ICMP].nexthopmtu == 1400
    # exactly the header the endpoint sent: the reply before the LB rewrote it
    assert tuple_of(inner(out.pkt)) == (EPS[0], sent[IP].src, 8080, sent[TCP].sport)
    assert all_csums_ok(out.pkt)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_port_unreachable_from_endpoint_reaches_client(h: Harness, mode: NatMode) -> None:
    """UDP to a closed endpoint port: the client's socket sees port unreachable for VIP:53."""
    service(h, mode, proto=17, port=53, target=5354)
    req = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP) / UDP(
        sport=33333, dport=53) / b"question"
    sent = h.run(req).pkt
    out = h.run(icmp_about(sent, src=EPS[0], mac=EP_MAC, code=3))
    assert out.retval == TC_ACT_REDIRECT
    assert (out.pkt[IP].src, out.pkt[IP].dst) == (VIP, CLIENT)
    assert tuple_of(inner(out.pkt)) == (CLIENT, VIP, 33333, 53)
    assert all_csums_ok(out.pkt)


def test_error_about_echo_restores_identifier(h: Harness) -> None:
    """fullnat rewrites a low echo id; an error about the forwarded echo carries the client's."""
    h.service(proto=1, port=0, target=0, mode=NatMode.FULLNAT)
    req = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP) / ICMP(id=77, seq=1)
    sent = h.run(req).pkt
    assert sent[ICMP].id != 77  # below the NAT port range: translated
    out = h.run(icmp_about(sent, src=EPS[0], mac=EP_MAC, code=1))
    assert out.retval == TC_ACT_REDIRECT
    q = inner(out.pkt)
    assert (q.src, q.dst, q[ICMP].id, q[ICMP].type) == (CLIENT, VIP, 77, 8)
    assert (out.pkt[IP].src, out.pkt[IP].dst) == (VIP, CLIENT)
    assert all_csums_ok(out.pkt)


def test_error_about_unknown_flow_goes_to_kernel(h: Harness) -> None:
    h.service()
    stray = Ether() / IP(src=CLIENT, dst=EPS[1]) / TCP(sport=1234, dport=80, flags="S")
    err = icmp_about(stray, src=EPS[1], mac=EP_MAC)
    raw = bytes(err)
    out = h.run(err)
    assert out.retval == TC_ACT_OK and bytes(out.pkt)[: len(raw)] == raw


def test_truncated_quote_translates_addresses_and_ports(h: Harness) -> None:
    """Routers may quote only the IP header and 8 bytes: no TCP checksum to fix, ports still."""
    h.service()
    sent = h.run(syn()).pkt
    quoted = bytes(sent[IP])[:28]
    err = Ether(src=EP_MAC, dst=LB_MAC) / IP(src="10.0.11.9", dst=CLIENT) / ICMP(
        type=11, code=0) / Raw(quoted)
    out = h.run(err)
    assert out.retval == TC_ACT_REDIRECT
    q = quote_of(out.pkt)
    assert q[12:20] == bytes(IP(src=CLIENT, dst=VIP))[12:20]
    assert struct.unpack("!HH", q[20:24]) == (40000, 80)
    assert (out.pkt[IP].src, out.pkt[IP].dst) == ("10.0.11.9", CLIENT)
    rebuilt = ICMP(bytes(out.pkt[ICMP]))
    del rebuilt.chksum
    assert bytes(rebuilt) == bytes(out.pkt[ICMP])
    inner_ip = IP(q[:20])
    del inner_ip.chksum
    assert bytes(inner_ip)[:20] == q[:20]


# --- generated errors -------------------------------------------------------------------------

def quote_fixed_point(pkt: Ether) -> bool:
    """The quoted L4 checksum field F is the value a pending CHECKSUM_PARTIAL fill-in over
    [quoted L4 header, end) writes back unchanged: ~(R + F) == F (0 and 0xffff are both zero)."""
    quote = quote_of(pkt)
    ihl = (quote[0] & 0xF) * 4
    off = ihl + (16 if quote[9] == 6 else 6)
    field = struct.unpack_from("!H", quote, off)[0]
    l4 = bytes(quote[ihl:]) + b"\0" * (len(quote[ihl:]) % 2)
    total = sum(struct.unpack(f"!{len(l4) // 2}H", l4))  # includes F
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    filled = ~total & 0xFFFF
    return filled == field or {filled, field} <= {0, 0xFFFF}


def test_ttl_one_to_vip_answers_time_exceeded_without_state(h: Harness) -> None:
    h.service()
    pkt = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, ttl=1) / TCP(
        sport=40001, dport=80, flags="S", seq=1000)
    original = bytes(pkt[IP])
    out = h.run(pkt)
    assert out.retval == TC_ACT_REDIRECT
    assert (out.pkt.src, out.pkt.dst) == (LB_MAC, CLIENT_MAC)  # back to the hop it came from
    assert (out.pkt[IP].src, out.pkt[IP].dst) == (VIP, CLIENT)
    assert (out.pkt[ICMP].type, out.pkt[ICMP].code) == (11, 0)
    quote = quote_of(out.pkt)
    assert quote[:16] == original[:16] and quote[20:36] == original[20:36]
    assert quote_fixed_point(out.pkt)
    assert all_csums_ok(out.pkt) or csum_ok(out.pkt)
    assert not list(h.dp.maps["ct_map"].keys())
    assert h.dp.datapath_stats()["icmp_sent"] == 1


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_ttl_one_on_established_reply(h: Harness, mode: NatMode) -> None:
    """A reply with TTL 1 expires at the LB: 'time exceeded' to the endpoint about the packet
    as the endpoint sent it, from an address it knows."""
    service(h, mode)
    sent = h.run(syn()).pkt
    rep = reply(sent, ttl=1)
    out = h.run(rep)
    assert out.retval == TC_ACT_REDIRECT
    expect_src = LB_EP_SIDE if mode == NatMode.DEFAULT else sent[IP].src
    assert (out.pkt[IP].src, out.pkt[IP].dst) == (expect_src, EPS[0])
    assert tuple_of(IP(quote_of(out.pkt)[:40])) == tuple_of(rep[IP])
    rebuilt = IP(bytes(out.pkt[IP]))
    del rebuilt.chksum
    del rebuilt[ICMP].chksum
    assert bytes(rebuilt) == bytes(out.pkt[IP])


@pytest.fixture
def small_mtu(netns: str) -> Iterator[None]:
    """The client-side link (dp0) and endpoint-side link (dp1) with MTU 1400."""
    for dev in ("dp0", "dp1"):
        subprocess.run(["ip", "link", "set", dev, "mtu", "1400"], check=True)
    try:
        yield
    finally:
        for dev in ("dp0", "dp1"):
            subprocess.run(["ip", "link", "set", dev, "mtu", "1500"], check=True)


def icmp_checksums_ok(pkt: Ether) -> bool:
    rebuilt = IP(bytes(pkt[IP]))
    del rebuilt.chksum
    del rebuilt[ICMP].chksum
    return bytes(rebuilt) == bytes(pkt[IP])


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_too_big_reply_on_cached_hop_gets_frag_needed(h: Harness, small_mtu: None,
                                                       mode: NatMode) -> None:
    service(h, mode)
    sent = h.run(syn()).pkt
    assert h.run(reply(sent)).retval == TC_ACT_REDIRECT  # caches the next hop toward dp0
    big = reply(sent, flags="A", payload=b"x" * 1460, df=True)
    original = bytes(big[IP])
    out = h.run(big)
    assert out.retval == TC_ACT_REDIRECT
    assert out.pkt.dst == EP_MAC  # back where it came from
    expect_src = LB_EP_SIDE if mode == NatMode.DEFAULT else sent[IP].src
    assert (out.pkt[IP].src, out.pkt[IP].dst) == (expect_src, EPS[0])
    assert (out.pkt[ICMP].type, out.pkt[ICMP].code, out.pkt[ICMP].nexthopmtu) == (3, 4, 1400)
    quote = quote_of(out.pkt)
    assert len(quote) == 548 and out.pkt[IP].len == 576
    # the pre-NAT header (the sender recognises its own packet); only the L4 checksum differs
    assert quote[:36] == original[:36] and quote[38:] == original[38:548]
    assert quote_fixed_point(out.pkt)
    assert icmp_checksums_ok(out.pkt)


def test_too_big_to_vip_gets_frag_needed_from_vip(h: Harness, small_mtu: None) -> None:
    h.service()
    first = h.run(syn())
    assert first.retval == TC_ACT_REDIRECT
    big = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, flags="DF") / UDP(
        sport=1, dport=2) / (b"y" * 1472)
    big = syn(flags="A") / (b"z" * 1460)
    big[IP].flags = "DF"
    out = h.run(Ether(bytes(big)))
    assert out.retval == TC_ACT_REDIRECT
    assert (out.pkt[IP].src, out.pkt[IP].dst) == (VIP, CLIENT)
    assert out.pkt[ICMP].nexthopmtu == 1400
    assert tuple_of(IP(quote_of(out.pkt)[:40])) == (CLIENT, VIP, 40000, 80)
    assert icmp_checksums_ok(out.pkt)


def test_too_big_without_df_goes_to_kernel_rewritten(h: Harness, small_mtu: None) -> None:
    h.service()
    h.run(syn())
    big = syn(flags="A") / (b"z" * 1460)
    out = h.run(Ether(bytes(big)))
    assert out.retval == TC_ACT_OK and out.pkt[IP].dst == EPS[0]
    assert h.dp.datapath_stats()["mtu_pass"] == 1


def test_fitting_packets_unaffected_by_mtu_check(h: Harness, small_mtu: None) -> None:
    h.service()
    h.run(syn())
    ok = syn(flags="A") / (b"z" * 1360)
    ok[IP].flags = "DF"
    out = h.run(Ether(bytes(ok)))
    assert out.retval == TC_ACT_REDIRECT and out.pkt[IP].dst == EPS[0] and csum_ok(out.pkt)


def test_generated_errors_are_rate_limited(h: Harness) -> None:
    """An empty bucket (its clock ahead of now, so it cannot refill) drops instead of answering."""
    h.service()
    bucket = L.IcmpBucket(last_ns=time.monotonic_ns() + 60 * 10**9, tokens=0)
    h.dp.obj.map("icmp_rate").update_percpu(struct.pack("=I", 0),
                                            [bytes(bucket)] * possible_cpus())
    pkt = syn(sport=40002)
    pkt[IP].ttl = 1
    out = h.run(Ether(bytes(pkt)))
    assert out.retval == TC_ACT_SHOT
    stats = h.dp.datapath_stats()
    assert stats["icmp_limited"] == 1 and stats["icmp_sent"] == 0
