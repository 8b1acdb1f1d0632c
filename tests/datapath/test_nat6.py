"""IPv6 through the compiled program: NAT66 rewrites and checksums (TCP, UDP, ICMPv6 echo), the
reverse path, hop limit and packet-too-big answers, ICMPv6 errors translated back, extension
headers and fragments; NAT64 (an IPv6 VIP with IPv4 endpoints) both ways."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
)
from scapy.layers.ipsec import ESP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pyloxi.model.lb import NatMode

from .conftest import (
    CLIENT6,
    CLIENT6_2,
    CLIENT_MAC,
    EP_MAC,
    EPS,
    EPS6,
    LB4_EP_SIDE,
    LB_MAC,
    TC_ACT_OK,
    TC_ACT_REDIRECT,
    TC_ACT_SHOT,
    VIP6,
    Harness,
    csum6_ok,
    csum_ok,
    ct_count,
)

ICMP_PROTO = 1


def syn6(src: str = CLIENT6, sport: int = 40000, dport: int = 80, flags: str = "S",
         hlim: int = 64, payload: bytes = b"") -> Ether:
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=src, dst=VIP6, hlim=hlim) / TCP(
        sport=sport, dport=dport, flags=flags, seq=1000) / payload


def answer6(to_ep: Ether, flags: str = "SA") -> Ether:
    ip, tcp = to_ep[IPv6], to_ep[TCP]
    return Ether(src=EP_MAC, dst=LB_MAC) / IPv6(src=ip.dst, dst=ip.src) / TCP(
        sport=tcp.dport, dport=tcp.sport, flags=flags, seq=5000, ack=tcp.seq + 1)


def test_nat66_tcp_forward_and_reverse(h: Harness) -> None:
    h.service(vip=VIP6, eps=EPS6[:1])
    out = h.run(syn6())
    assert out.retval == TC_ACT_REDIRECT
    ip, tcp = out.pkt[IPv6], out.pkt[TCP]
    assert (ip.src, ip.dst, tcp.sport, tcp.dport) == (CLIENT6, EPS6[0], 40000, 8080)
    assert ip.hlim == 63 and out.pkt.dst == EP_MAC and csum6_ok(out.pkt)

    back = h.run(answer6(out.pkt))
    assert back.retval == TC_ACT_REDIRECT
    ip, tcp = back.pkt[IPv6], back.pkt[TCP]
    assert (ip.src, ip.dst, tcp.sport, tcp.dport) == (VIP6, CLIENT6, 80, 40000)
    assert back.pkt.dst == CLIENT_MAC and csum6_ok(back.pkt)
    assert ct_count(h) == 2


def test_nat66_fullnat_ports_and_udp_checksum(h: Harness) -> None:
    h.service(vip=VIP6, eps=EPS6[:1], proto=17, port=53, target=5353, mode=NatMode.FULLNAT)
    outs = []
    for src in (CLIENT6, CLIENT6_2):   # same source port from two clients
        pkt = Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=src, dst=VIP6) / UDP(
            sport=3868, dport=53) / Raw(b"q" * 33)
        out = h.run(pkt)
        assert out.retval == TC_ACT_REDIRECT
        assert (out.pkt[IPv6].src, out.pkt[IPv6].dst, out.pkt[UDP].dport) == (VIP6, EPS6[0], 5353)
        assert out.pkt[UDP].chksum != 0 and csum6_ok(out.pkt)
        outs.append(out.pkt)
    assert outs[0][UDP].sport != outs[1][UDP].sport
    for out, client in zip(outs, (CLIENT6, CLIENT6_2), strict=True):
        rep = Ether(src=EP_MAC, dst=LB_MAC) / IPv6(src=EPS6[0], dst=VIP6) / UDP(
            sport=5353, dport=out[UDP].sport) / Raw(b"a" * 20)
        back = h.run(rep)
        assert back.retval == TC_ACT_REDIRECT
        assert (back.pkt[IPv6].src, back.pkt[IPv6].dst) == (VIP6, client)
        assert (back.pkt[UDP].sport, back.pkt[UDP].dport) == (53, 3868) and csum6_ok(back.pkt)


def test_icmpv6_echo_through_a_v6_vip(h: Harness) -> None:
    h.service(vip=VIP6, eps=EPS6[:1], proto=ICMP_PROTO, port=0, target=0, mode=NatMode.FULLNAT)
    req = Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=CLIENT6, dst=VIP6) / ICMPv6EchoRequest(
        id=77, seq=1, data=b"ping6")
    out = h.run(req)
    assert out.retval == TC_ACT_REDIRECT
    assert (out.pkt[IPv6].src, out.pkt[IPv6].dst) == (VIP6, EPS6[0])
    assert ICMPv6EchoRequest in out.pkt and csum6_ok(out.pkt)
    ident = out.pkt[ICMPv6EchoRequest].id
    rep = Ether(src=EP_MAC, dst=LB_MAC) / IPv6(src=EPS6[0], dst=VIP6) / ICMPv6EchoReply(
        id=ident, seq=1, data=b"ping6")
    back = h.run(rep)
    assert back.retval == TC_ACT_REDIRECT
    assert (back.pkt[IPv6].src, back.pkt[IPv6].dst) == (VIP6, CLIENT6)
    assert back.pkt[ICMPv6EchoReply].id == 77 and csum6_ok(back.pkt)


def test_hop_limit_one_gets_time_exceeded_from_the_vip(h: Harness) -> None:
    h.service(vip=VIP6, eps=EPS6[:1])
    out = h.run(syn6(hlim=1))
    assert out.retval == TC_ACT_REDIRECT
    assert out.pkt[IPv6].src == VIP6 and out.pkt[IPv6].dst == CLIENT6
    assert ICMPv6TimeExceeded in out.pkt and csum6_ok(out.pkt)
    quoted = IPv6(bytes(out.pkt[ICMPv6TimeExceeded].payload))
    assert quoted.dst == VIP6 and quoted[TCP].dport == 80   # the packet as sent
    assert ct_count(h) == 0


@pytest.fixture
def small_mtu6(netns: str) -> Iterator[None]:
    subprocess.run(["ip", "link", "set", "dp1", "mtu", "1400"], check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "link", "set", "dp1", "mtu", "1500"], check=True)


def test_too_big_gets_packet_too_big(h: Harness, small_mtu6: None) -> None:
    h.service(vip=VIP6, eps=EPS6[:1])
    h.run(syn6())
    big = syn6(flags="A", payload=b"x" * 1400)
    out = h.run(big)
    assert out.retval == TC_ACT_REDIRECT
    assert ICMPv6PacketTooBig in out.pkt and out.pkt[ICMPv6PacketTooBig].mtu == 1400
    assert (out.pkt[IPv6].src, out.pkt[IPv6].dst) == (VIP6, CLIENT6) and csum6_ok(out.pkt)
    assert len(out.pkt[IPv6]) <= 1280


def test_icmpv6_error_about_a_nated_packet_is_translated_back(h: Harness) -> None:
    h.service(vip=VIP6, eps=EPS6[:1], mode=NatMode.FULLNAT)
    out = h.run(syn6())
    sent = out.pkt[IPv6]
    err = Ether(src=EP_MAC, dst=LB_MAC) / IPv6(src=EPS6[0], dst=sent.src) / ICMPv6DestUnreach(
        code=4) / bytes(sent)
    back = h.run(err)
    assert back.retval == TC_ACT_REDIRECT
    assert (back.pkt[IPv6].src, back.pkt[IPv6].dst) == (VIP6, CLIENT6)
    inner = IPv6(bytes(back.pkt[ICMPv6DestUnreach].payload))
    assert (inner.src, inner.dst) == (CLIENT6, VIP6)
    assert (inner[TCP].sport, inner[TCP].dport) == (40000, 80)
    assert csum6_ok(back.pkt)
    assert csum6_ok(Ether() / inner)   # the quoted TCP checksum follows its tuple
    assert h.dp.datapath_stats()["icmp_xlate"] >= 1


def test_destination_options_are_skipped_esp_is_the_kernels(h: Harness) -> None:
    h.service(vip=VIP6, eps=EPS6[:1])
    pkt = Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=CLIENT6, dst=VIP6) / \
        IPv6ExtHdrDestOpt() / TCP(sport=40001, dport=80, flags="S")
    out = h.run(pkt)
    assert out.retval == TC_ACT_REDIRECT and out.pkt[IPv6].dst == EPS6[0]
    assert out.pkt[TCP].dport == 8080 and csum6_ok(out.pkt)
    esp = Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=CLIENT6, dst=VIP6) / ESP(spi=1, seq=1)
    assert h.run(esp).retval == TC_ACT_OK
    assert h.dp.datapath_stats()["ext_pass"] == 1


def test_v6_fragments_follow_their_first(h: Harness) -> None:
    h.service(vip=VIP6, eps=EPS6[:1], proto=17, port=53, target=5353)
    first = Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=CLIENT6, dst=VIP6) / \
        IPv6ExtHdrFragment(id=0xABCDEF01, offset=0, m=1, nh=17) / \
        UDP(sport=4000, dport=53, len=8 + 64, chksum=0x1234) / Raw(b"a" * 32)
    later = Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=CLIENT6, dst=VIP6) / \
        IPv6ExtHdrFragment(id=0xABCDEF01, offset=5, m=0, nh=17) / Raw(b"b" * 32)
    a = h.run(first)
    b = h.run(later)
    assert a.retval == b.retval == TC_ACT_REDIRECT
    assert a.pkt[IPv6].dst == b.pkt[IPv6].dst == EPS6[0]
    assert a.pkt[UDP].dport == 5353
    other = later.copy()
    other[IPv6ExtHdrFragment].id = 7   # no first fragment seen: the kernel's
    assert h.run(other).retval == TC_ACT_OK


def test_v6_allowed_sources(h: Harness) -> None:
    h.service(vip=VIP6, eps=EPS6[:1], allowed=("2001:db8:1::2/128",))
    assert h.run(syn6(src=CLIENT6)).retval == TC_ACT_REDIRECT
    assert h.run(syn6(src=CLIENT6_2)).retval == TC_ACT_SHOT


# --- NAT64: an IPv6 VIP, IPv4 endpoints -------------------------------------------------------

def test_nat64_tcp_both_ways(h: Harness) -> None:
    h.service(vip=VIP6, eps=EPS[:1], snat=LB4_EP_SIDE)
    out = h.run(syn6(payload=b"hello"))
    assert out.retval == TC_ACT_REDIRECT and IPv6 not in out.pkt
    ip, tcp = out.pkt[IP], out.pkt[TCP]
    assert (ip.src, ip.dst, tcp.dport) == (LB4_EP_SIDE, EPS[0], 8080)
    assert ip.flags.DF and ip.ttl == 63 and ip.len == 20 + 20 + 5 and csum_ok(out.pkt)
    assert bytes(tcp.payload) == b"hello"
    back = h.run(Ether(src=EP_MAC, dst=LB_MAC) / IP(src=EPS[0], dst=LB4_EP_SIDE) / TCP(
        sport=8080, dport=tcp.sport, flags="SA", seq=5000, ack=1006) / Raw(b"world!"))
    assert back.retval == TC_ACT_REDIRECT and IP not in back.pkt
    ip6, tcp = back.pkt[IPv6], back.pkt[TCP]
    assert (ip6.src, ip6.dst, tcp.sport, tcp.dport) == (VIP6, CLIENT6, 80, 40000)
    assert ip6.hlim == 63 and ip6.plen == 20 + 6 and csum6_ok(back.pkt)
    assert back.pkt.dst == CLIENT_MAC


def test_nat64_udp_zero_checksum_gets_a_full_one(h: Harness) -> None:
    h.service(vip=VIP6, eps=EPS[:1], proto=17, port=53, target=5353, snat=LB4_EP_SIDE)
    out = h.run(Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=CLIENT6, dst=VIP6) / UDP(
        sport=4444, dport=53) / Raw(b"query"))
    assert out.retval == TC_ACT_REDIRECT and csum_ok(out.pkt)
    for size in (0, 1, 7, 300):   # odd lengths: the last word is short
        rep = Ether(src=EP_MAC, dst=LB_MAC) / IP(src=EPS[0], dst=LB4_EP_SIDE) / UDP(
            sport=5353, dport=out.pkt[UDP].sport, chksum=0) / Raw(b"r" * size)
        back = h.run(rep)
        assert back.retval == TC_ACT_REDIRECT
        assert back.pkt[UDP].chksum != 0 and csum6_ok(back.pkt), size
        assert bytes(back.pkt[UDP].payload) == b"r" * size


def test_nat64_echo_translates_icmpv6_and_icmp(h: Harness) -> None:
    h.service(vip=VIP6, eps=EPS[:1], proto=ICMP_PROTO, port=0, target=0, snat=LB4_EP_SIDE)
    out = h.run(Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=CLIENT6, dst=VIP6) /
                ICMPv6EchoRequest(id=99, seq=3, data=b"abcdefg"))
    assert out.retval == TC_ACT_REDIRECT
    icmp = out.pkt[ICMP]
    assert (out.pkt[IP].src, out.pkt[IP].dst, icmp.type) == (LB4_EP_SIDE, EPS[0], 8)
    assert icmp.seq == 3 and bytes(icmp.payload) == b"abcdefg" and csum_ok(out.pkt)
    back = h.run(Ether(src=EP_MAC, dst=LB_MAC) / IP(src=EPS[0], dst=LB4_EP_SIDE) /
                 ICMP(type=0, id=icmp.id, seq=3) / Raw(b"abcdefg"))
    assert back.retval == TC_ACT_REDIRECT
    rep = back.pkt[ICMPv6EchoReply]
    assert (back.pkt[IPv6].src, back.pkt[IPv6].dst) == (VIP6, CLIENT6)
    assert (rep.id, rep.seq, rep.data) == (99, 3, b"abcdefg") and csum6_ok(back.pkt)


def test_nat64_reply_too_big_for_v6_gets_frag_needed_minus_20(h: Harness) -> None:
    h.service(vip=VIP6, eps=EPS[:1], snat=LB4_EP_SIDE)
    out = h.run(syn6())
    big = Ether(src=EP_MAC, dst=LB_MAC) / IP(src=EPS[0], dst=LB4_EP_SIDE, flags="DF") / TCP(
        sport=8080, dport=out.pkt[TCP].sport, flags="A", seq=5001, ack=1001) / Raw(b"z" * 1450)
    back = h.run(big)   # 1490 bytes of IPv4 become 1510 of IPv6: more than dp0's 1500
    assert back.retval == TC_ACT_REDIRECT
    assert (back.pkt[ICMP].type, back.pkt[ICMP].code, back.pkt[ICMP].nexthopmtu) == (3, 4, 1480)
    assert back.pkt[IP].dst == EPS[0]


def test_nat64_icmp_error_becomes_icmpv6_for_the_client(h: Harness) -> None:
    """A v4 router's 'fragmentation needed' about a translated packet reaches the IPv6 client as
    'packet too big' (MTU + 20), from the VIP, quoting the client's own packet."""
    h.service(vip=VIP6, eps=EPS[:1], snat=LB4_EP_SIDE)
    out = h.run(syn6())
    sent = out.pkt[IP]
    err = Ether(src=EP_MAC, dst=LB_MAC) / IP(src="10.0.11.254", dst=sent.src) / ICMP(
        type=3, code=4, nexthopmtu=1400) / bytes(sent)[:28]
    back = h.run(err)
    assert back.retval == TC_ACT_REDIRECT
    assert (back.pkt[IPv6].src, back.pkt[IPv6].dst) == (VIP6, CLIENT6)
    ptb = back.pkt[ICMPv6PacketTooBig]
    assert ptb.mtu == 1420 and csum6_ok(back.pkt)
    inner = IPv6(bytes(ptb.payload))
    assert (inner.src, inner.dst, inner.nh) == (CLIENT6, VIP6, 6)
    assert bytes(inner.payload)[:4] == (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")
    assert back.pkt.dst == CLIENT_MAC


def test_v6_port_range_maps_by_offset(h: Harness) -> None:
    h.service(vip=VIP6, eps=EPS6[:1], port=8000, port_max=8009, target=9000)
    for dport in (8000, 8007):
        out = h.run(syn6(dport=dport, sport=40000 + dport))
        assert out.retval == TC_ACT_REDIRECT
        assert out.pkt[TCP].dport == 9000 + dport - 8000 and csum6_ok(out.pkt)
    assert h.run(syn6(dport=8010)).retval == TC_ACT_OK   # outside the range: the kernel's
