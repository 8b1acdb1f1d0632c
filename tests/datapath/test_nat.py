"""Golden packets through the compiled program: rewrites, checksums, the reverse path."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from pyloxi.datapath.ebpf import layout as L
from pyloxi.model.lb import NatMode

from .conftest import (
    CLIENT,
    CLIENT2,
    CLIENT_MAC,
    EP_MAC,
    EPS,
    LB_MAC,
    TC_ACT_OK,
    TC_ACT_REDIRECT,
    VIP,
    Harness,
    csum_ok,
    ct_count,
    syn,
)


def reply(pkt_out: Ether, flags: str = "SA") -> Ether:
    """The endpoint's answer to a packet the LB sent it."""
    ip, tcp = pkt_out[IP], pkt_out[TCP]
    return Ether(src=EP_MAC, dst=LB_MAC) / IP(src=ip.dst, dst=ip.src, ttl=64) / TCP(
        sport=tcp.dport, dport=tcp.sport, flags=flags, seq=5000, ack=tcp.seq + 1)


def test_dnat_forward_and_reverse(h: Harness) -> None:
    h.service()
    out = h.run(syn())
    assert out.retval == TC_ACT_REDIRECT
    ip, tcp = out.pkt[IP], out.pkt[TCP]
    assert (ip.src, ip.dst, tcp.sport, tcp.dport) == (CLIENT, EPS[0], 40000, 8080)
    assert ip.ttl == 63 and out.pkt.dst == EP_MAC and csum_ok(out.pkt)

    back = h.run(reply(out.pkt))
    assert back.retval == TC_ACT_REDIRECT
    ip, tcp = back.pkt[IP], back.pkt[TCP]
    assert (ip.src, ip.dst, tcp.sport, tcp.dport) == (VIP, CLIENT, 80, 40000)
    assert back.pkt.dst == CLIENT_MAC and csum_ok(back.pkt)
    assert ct_count(h) == 2


def test_fullnat_allocates_distinct_ports_for_colliding_clients(h: Harness) -> None:
    h.service(mode=NatMode.FULLNAT)
    a = h.run(syn(src=CLIENT, sport=50000))
    b = h.run(syn(src=CLIENT2, sport=50000))
    assert a.pkt[IP].src == b.pkt[IP].src == VIP
    assert a.pkt[IP].dst == b.pkt[IP].dst == EPS[0]
    # same client port, same endpoint: the second flow must get another source port
    assert a.pkt[TCP].sport != b.pkt[TCP].sport
    for out in (a, b):
        assert out.pkt[TCP].sport >= 1024 and csum_ok(out.pkt)
    assert a.pkt[TCP].sport == 50000  # the client's own port is kept when free
    # replies go back to their own client
    assert h.run(reply(a.pkt)).pkt[IP].dst == CLIENT
    assert h.run(reply(b.pkt)).pkt[IP].dst == CLIENT2
    assert h.run(reply(b.pkt)).pkt[TCP].dport == 50000


def test_onearm_snat_to_lb_address(h: Harness) -> None:
    h.service(mode=NatMode.ONEARM, snat="10.0.11.1")
    out = h.run(syn())
    assert out.pkt[IP].src == "10.0.11.1" and csum_ok(out.pkt)
    # the LB's own address: NAT ports stay above the host's ephemeral range
    assert out.pkt[TCP].sport >= L.NAT_PORT_MIN
    back = h.run(reply(out.pkt))
    assert (back.pkt[IP].src, back.pkt[IP].dst, back.pkt[TCP].dport) == (VIP, CLIENT, 40000)


def test_udp_checksums_and_zero_checksum_kept(h: Harness) -> None:
    h.service(proto=17, port=53, target=5353)
    pkt = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP) / UDP(
        sport=3333, dport=53) / b"q"
    out = h.run(pkt)
    assert (out.pkt[IP].dst, out.pkt[UDP].dport) == (EPS[0], 5353) and csum_ok(out.pkt)
    zero = Ether(bytes(pkt))
    zero[UDP].sport = 3334
    raw = bytearray(bytes(zero))
    raw[14 + 20 + 6: 14 + 20 + 8] = b"\x00\x00"  # no UDP checksum
    out = h.run(Ether(bytes(raw)))
    assert out.pkt[UDP].chksum == 0 and out.pkt[IP].dst == EPS[0]


def test_icmp_echo_to_vip(h: Harness) -> None:
    h.service(proto=1, port=0, target=0)
    req = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP) / ICMP(id=77, seq=1)
    out = h.run(req)
    assert out.pkt[IP].dst == EPS[0] and out.pkt[ICMP].id == 77 and csum_ok(out.pkt)
    rep = Ether(src=EP_MAC, dst=LB_MAC) / IP(src=EPS[0], dst=CLIENT) / ICMP(type=0, id=77, seq=1)
    back = h.run(rep)
    assert back.pkt[IP].src == VIP and csum_ok(back.pkt)


def test_not_ours_passes_untouched(h: Harness) -> None:
    h.service()
    for pkt in (
        syn(dport=81),  # VIP, other port
        syn(dst="10.0.11.2"),  # not a VIP
        Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=VIP, psrc=CLIENT),
        Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP) / ICMP(),  # no icmp rule
    ):
        raw = bytes(pkt)
        out = h.run(pkt)
        assert out.retval == TC_ACT_OK and bytes(out.pkt)[: len(raw)] == raw
    assert ct_count(h) == 0


def test_port_range_maps_by_offset(h: Harness) -> None:
    h.service(port=8000, port_max=8009, target=9000)
    out = h.run(syn(dport=8004))
    assert out.pkt[TCP].dport == 9004
    keep = h.service(port=7000, port_max=7009, target=0)
    assert keep.port_max == 7009
    assert h.run(syn(dport=7003)).pkt[TCP].dport == 7003


def test_allowed_sources_drop_others(h: Harness) -> None:
    h.service(allowed=(f"{CLIENT}/32",))
    assert h.run(syn(src=CLIENT)).retval == TC_ACT_REDIRECT
    assert h.run(syn(src=CLIENT2)).retval == 2  # TC_ACT_SHOT
    assert h.dp.datapath_stats()["drop_source"] == 1


def test_no_active_endpoint_hands_packet_to_kernel(h: Harness) -> None:
    h.service(active=[False])
    pkt = syn()
    out = h.run(pkt)
    assert out.retval == TC_ACT_OK and out.pkt[IP].dst == VIP
    assert h.dp.datapath_stats()["no_endpoint"] == 1
